"""SEC: the bridge refuses calls without the session token, and the token leaks nowhere."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from rlm_conformance.cases import case
from rlm_conformance.doubles import Script, finish, repl
from rlm_conformance.fixtures import MakeRLM, StartEnv
from rlm_conformance.setup import AGENT
from rlm_conformance.suite.helpers import ok, value
from rlm_core import RLMLogger
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.bridge.tls import auth_metadata
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import PERSISTENT, Environment

MARK = "pwned_by_an_unauthenticated_call"


def session_of(env: Environment) -> tuple[Any, str]:
    """The agent stub over the environment's own channel (TLS and carrier included) and
    the session token. Agent-backed environments keep both in their bridge client."""
    assert isinstance(env, AgentEnvironment)
    client = env._client
    assert client is not None, "the environment is not started"
    stub = pb_grpc.AgentStub(client.channel)  # type: ignore[no-untyped-call]
    return stub, client.endpoint.token


def rejected(call: Any) -> grpc.RpcError:
    """Run ``call``; it must fail as UNAUTHENTICATED."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    return error


class BridgeSecurityTests:
    """Token checks on every call, and the token kept out of every place it could leak."""

    @case("SEC-001", "a call without the token is rejected before it runs", requires=[AGENT])
    def test_no_token(self, env: Environment) -> None:
        stub, _ = session_of(env)
        rejected(lambda: stub.Execute(pb.ExecuteRequest(code=f"{MARK} = 1"), timeout=30))
        assert value(env, f"'{MARK}' in globals()") is False

    @case("SEC-002", "a call with a wrong token is rejected before it runs", requires=[AGENT])
    def test_wrong_token(self, env: Environment) -> None:
        stub, token = session_of(env)
        for bad in ("x" * len(token), token[:-1], token + "0", ""):
            rejected(
                lambda bad=bad: stub.Execute(
                    pb.ExecuteRequest(code=f"{MARK} = 1"),
                    metadata=auth_metadata(bad),
                    timeout=30,
                )
            )
            rejected(
                lambda bad=bad: stub.GetVariable(
                    pb.GetVariableRequest(name="answer"), metadata=auth_metadata(bad), timeout=30
                )
            )
        assert value(env, f"'{MARK}' in globals()") is False

    @case(
        "SEC-003",
        "the token is in no command line or environment of any process the sandbox shows",
        requires=[AGENT],
    )
    def test_token_not_in_processes(self, env: Environment) -> None:
        _, token = session_of(env)
        ok(
            env,
            "import subprocess, sys\n_kid = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'])",
        )
        code = (
            "import os\n_hits = []\n"
            "for _p in os.listdir('/proc'):\n"
            "    if not _p.isdigit():\n        continue\n"
            "    for _what in ('cmdline', 'environ'):\n"
            "        try:\n"
            "            with open(f'/proc/{_p}/{_what}', 'rb') as _f:\n"
            "                if _needle in _f.read():\n"
            "                    _hits.append((_p, _what))\n"
            "        except OSError:\n            pass\n"
            "_kid.kill()\n_kid.wait()"
        )
        env.set_variable("_needle_text", token)
        ok(env, "_needle = _needle_text.encode()\ndel _needle_text\n" + code)
        assert value(env, "_hits") == [], "the session token is visible in /proc"
        assert token not in str(
            value(env, "[__import__('sys').argv, dict(__import__('os').environ)]")
        )

    @case(
        "SEC-004",
        "the token is in no log record, trajectory, repr or error message",
        requires=[AGENT, PERSISTENT],
    )
    def test_token_not_logged(
        self,
        start_env: StartEnv,
        make_rlm: MakeRLM,
        caplog: pytest.LogCaptureFixture,
        tmp_path: Any,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        env = start_env()
        stub, token = session_of(env)
        ok(env, "print(llm_query('hi'))")
        env.execute("1 / 0")
        rejected(lambda: stub.Execute(pb.ExecuteRequest(code="1"), timeout=30))
        shown = [repr(env), str(env)]
        launcher = env.active_launcher  # type: ignore[attr-defined]
        shown += [repr(launcher), launcher.diagnostics()]
        env.close()
        for text in shown:
            assert token not in text
        for record in caplog.records:
            assert token not in record.getMessage()
            assert token not in str(record.args)

        # A whole run's trajectory file: the run's own session token is not in it.
        logger = RLMLogger(log_dir=str(tmp_path))
        script = Script([repl("print(llm_query('q'))"), finish("done")])
        rlm = make_rlm(script, logger=logger, persistent=True)
        assert rlm.completion("c").response == "done"
        run_env = rlm._persistent_env  # the run's environment, still open
        assert run_env is not None
        _, run_token = session_of(run_env)
        files = list(tmp_path.iterdir())
        assert files, "the logger wrote no trajectory"
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert run_token not in text and token not in text
