"""Security and protocol properties of the gRPC bridge, with real agent processes.

Every test talks real gRPC to a real ``python -m rlm_core.agent`` (or a real in-process gRPC
server) over Unix sockets or the loopback interface.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from scripts import EchoHandler

import rlm_core.bridge.client as client_module
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, codec
from rlm_core.bridge.client import AgentClient, Endpoint
from rlm_core.bridge.tls import (
    TLS_SERVER_NAME,
    TLSMaterial,
    auth_metadata,
    make_tls_material,
    new_token,
)
from rlm_core.environments.agent import AgentSecrets
from rlm_core.environments.base import Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.exceptions import ProtocolMismatchError, SandboxCrashedError, SandboxError
from rlm_core.types import RLMChatCompletion, UsageSummary

ROOT = Path(__file__).resolve().parent.parent
OVER_LIMIT = 70 * 1024 * 1024  # characters; more bytes than MAX_MESSAGE_BYTES


# -- helpers ------------------------------------------------------------------------------


class Handler(EchoHandler):
    """Answers ``<kind>:<prompt>``; the prompt ``"huge"`` gets an answer larger than the
    message limit."""

    def answer(self, prompt: Any, kind: str) -> str:
        return "y" * OVER_LIMIT if prompt == "huge" else f"{kind}:{prompt}"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short private directory (Unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rlm-sec-"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_AGENT_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@dataclass
class Agent:
    """An agent process this test started itself."""

    process: subprocess.Popen[str]
    target: str
    token: str
    marker: Path
    tls: TLSMaterial | None = None
    output: str = ""
    channels: list[grpc.Channel] = field(default_factory=list)

    def stub(
        self, root_certificate: bytes | None = None, plaintext: bool = False
    ) -> pb_grpc.AgentStub:
        """A stub on a fresh channel: pinned to ``root_certificate`` (default: the agent's
        own certificate when it serves TLS), or plaintext."""
        cert = root_certificate or (self.tls.certificate if self.tls else None)
        if cert is None or plaintext:
            channel = grpc.insecure_channel(self.target)
        else:
            channel = grpc.secure_channel(
                self.target,
                grpc.ssl_channel_credentials(root_certificates=cert),
                options=[("grpc.ssl_target_name_override", TLS_SERVER_NAME)],
            )
        self.channels.append(channel)
        return pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self.token)

    def marker_code(self, variable: str = "pwned") -> str:
        """A cell that leaves a trace on disk and in the namespace."""
        return f"open({str(self.marker)!r}, 'w').write('x')\n{variable} = 1"


def _wait_ready(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert process.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = box[0] if box else ""
    if not line.startswith("RLM-AGENT-READY"):
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"the agent did not start: {line!r}\n{err}")
    return line


def spawn(
    command: list[str], stdin_text: str | None, env: dict[str, str], cwd: Path
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert process.stdin is not None
    if stdin_text is not None:
        process.stdin.write(stdin_text)
    process.stdin.close()
    process.stdin = None  # so that communicate() does not flush the closed pipe
    return process


@contextmanager
def running_agent(
    sockdir: Path,
    *,
    tls: bool = False,
    tcp: bool = False,
    delivery: str = "stdin",
    prefix: list[str] | None = None,
) -> Iterator[Agent]:
    """Start ``python -m rlm_core.agent`` with a fresh token and stop it afterwards;
    ``agent.output`` then holds everything it wrote to stdout and stderr."""
    token = new_token()
    material = make_tls_material() if tls else None
    secrets = AgentSecrets(token, material)
    listen = "127.0.0.1:0" if tcp else f"unix:{sockdir / 'agent.sock'}"
    command = [*(prefix or [sys.executable, "-m", "rlm_core.agent"]), "--listen", listen]
    command += ["--heartbeat-timeout", "120"]
    env = _agent_env()
    stdin_text: str | None = None
    if delivery == "stdin":
        command.append("--secrets-stdin")
        stdin_text = secrets.to_json() + "\n"
    elif delivery == "file":
        path = sockdir / "secrets.json"
        path.write_text(secrets.to_json(), encoding="utf-8")
        os.chmod(path, 0o600)
        command += ["--secrets-file", str(path)]
    else:
        env["RLM_AGENT_TOKEN"] = token
    process = spawn(command, stdin_text, env, sockdir)
    agent = Agent(process, "", token, sockdir / "pwned", material)
    try:
        line = _wait_ready(process)
        port = re.search(r"port=(\d+)", line)
        assert port is not None
        agent.target = f"127.0.0.1:{port.group(1)}" if tcp else listen
        yield agent
    finally:
        for channel in agent.channels:
            channel.close()
        if process.poll() is None:
            process.terminate()
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate(timeout=10)
        agent.output = out + err


def _proc_bytes(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")

# Metadata that must not authenticate; each builder gets the real token.
BAD_METADATA: dict[str, Callable[[str], tuple[tuple[str, str], ...] | None]] = {
    "wrong-token": lambda token: auth_metadata("not-the-token"),
    "no-metadata": lambda token: None,
    "token-without-bearer": lambda token: (("authorization", token),),
    "truncated-token": lambda token: auth_metadata(token[:-1]),
    "token-plus-suffix": lambda token: auth_metadata(token + "x"),
    "empty-bearer": lambda token: (("authorization", "Bearer "),),
    "other-key": lambda token: (("x-authorization", f"Bearer {token}"),),
}
BAD = pytest.mark.parametrize("bad", list(BAD_METADATA), ids=list(BAD_METADATA))


def _unauthenticated(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
    return info.value


# -- 1. the token never leaks ---------------------------------------------------------------


@needs_proc
@pytest.mark.timeout(60)
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_session_token_never_leaks(tls: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="rlm_core")
    env = SubprocessEnvironment(tls=tls)
    env.start(Session(subcalls=Handler()))
    try:
        assert env._client is not None
        endpoint = env._client.endpoint
        token = endpoint.token
        assert len(token) >= 32
        pid = env.agent_pid
        assert pid is not None

        # The agent process: neither its command line nor its environment holds the token.
        assert token.encode() not in _proc_bytes(pid, "cmdline")
        assert token.encode() not in _proc_bytes(pid, "environ")
        assert b"rlm_core.agent" in _proc_bytes(pid, "cmdline")  # it is the right process

        # A normal session, including a failing cell, sub-calls and variables.
        env.add_context("some context")
        result = env.execute("print(llm_query('hi'), rlm_query_batched(['a']))\n1 / 0")
        assert result.stdout == "llm:hi ['rlm:a']\n"
        assert result.error == "ZeroDivisionError: division by zero"
        env.set_variable("v", {"k": [1, 2]})
        assert env.get_variable("v") == {"k": [1, 2]}
        # The cell's own view of its process: no token in its environment either.
        seen = env.execute("import os\nprint(dict(os.environ))").stdout
        assert token not in seen and "RLM_AGENT_TOKEN" not in seen

        # A rejected call makes the agent log; the log names the method, not any token.
        stub = pb_grpc.AgentStub(env._client.channel)  # type: ignore[no-untyped-call]
        _unauthenticated(
            lambda: stub.GetVariable(
                pb.GetVariableRequest(name="v"), metadata=auth_metadata("bad"), timeout=10
            )
        )

        # Nothing shows the token in its repr or str.
        secrets = AgentSecrets(token, make_tls_material() if tls else None)
        for shown in (repr(endpoint), str(endpoint), repr(secrets), str(secrets)):
            assert token not in shown
        if secrets.tls is not None:
            assert b"PRIVATE KEY" not in repr(secrets.tls).encode()
            assert "PRIVATE KEY" not in repr(secrets)

        # A crash report carries the agent's stderr; still no token.
        with pytest.raises(SandboxCrashedError) as crash:
            env.execute("import os\nos._exit(3)")
        assert crash.value.exit_status == 3
        assert token not in str(crash.value)

        assert env.launcher is not None
        launcher = env.launcher
    finally:
        env.close()

    deadline = time.monotonic() + 20
    while "rejected a call" not in launcher.diagnostics() and time.monotonic() < deadline:
        time.sleep(0.05)
    diagnostics = launcher.diagnostics()
    assert "rejected a call to /rlm.v1.Agent/GetVariable" in diagnostics
    assert token not in diagnostics

    for record in caplog.records:
        text = " ".join(
            str(part) for part in (record.getMessage(), record.args, record.exc_text) if part
        )
        assert token not in text, record


@pytest.mark.timeout(60)
def test_agent_stdout_and_stderr_never_show_the_token(sockdir: Path) -> None:
    with running_agent(sockdir, tls=True) as agent:
        stub = agent.stub()
        stub.Handshake(
            pb.HandshakeRequest(protocol_version=PROTOCOL_VERSION, heartbeat_timeout=120),
            metadata=agent.metadata,
            timeout=10,
        )
        for bad in BAD_METADATA.values():
            request = pb.ExecuteRequest(code="x = 1")
            _unauthenticated(
                functools.partial(stub.Execute, request, metadata=bad(agent.token), timeout=10)
            )
        stub.Execute(
            pb.ExecuteRequest(code="import sys\nprint('out')\nprint('err', file=sys.stderr)"),
            metadata=agent.metadata,
            timeout=10,
        )
        stub.Close(pb.CloseRequest(), metadata=agent.metadata, timeout=10)
        agent.process.wait(timeout=20)
    assert "RLM-AGENT-READY" not in agent.output  # the ready line was read before
    assert "rejected a call to /rlm.v1.Agent/Execute" in agent.output
    assert "shutting down: the host closed the session" in agent.output
    assert agent.token not in agent.output
    assert agent.tls is not None
    assert agent.tls.private_key.decode() not in agent.output


@needs_proc
@pytest.mark.timeout(60)
def test_tls_private_key_is_not_in_the_agent_command_line_or_environment(sockdir: Path) -> None:
    with running_agent(sockdir, tls=True) as agent:
        assert agent.tls is not None
        key_line = agent.tls.private_key.splitlines()[1]  # a line of the base64 key body
        for name in ("cmdline", "environ"):
            data = _proc_bytes(agent.process.pid, name)
            assert key_line not in data
            assert agent.token.encode() not in data


@pytest.mark.timeout(60)
def test_secrets_file_is_deleted_once_read(sockdir: Path) -> None:
    with running_agent(sockdir, delivery="file") as agent:
        assert not (sockdir / "secrets.json").exists()
        response = agent.stub().Execute(
            pb.ExecuteRequest(code="print(6 * 7)"), metadata=agent.metadata, timeout=10
        )
        assert response.stdout == "42\n"


@pytest.mark.timeout(60)
def test_token_from_the_environment_is_not_inherited_by_cells(sockdir: Path) -> None:
    code = (
        "import os, subprocess, sys\n"
        "print('RLM_AGENT_TOKEN' in os.environ)\n"
        "child = [sys.executable, '-c', 'import os; print(os.environ.get(\"RLM_AGENT_TOKEN\"))']\n"
        "print(subprocess.run(child, capture_output=True, text=True).stdout.strip())"
    )
    with running_agent(sockdir, delivery="env") as agent:
        response = agent.stub().Execute(
            pb.ExecuteRequest(code=code), metadata=agent.metadata, timeout=30
        )
    assert response.error == "", response.stderr
    assert response.stdout == "False\nNone\n"


# -- 2. wrong or missing token: rejected, nothing runs ---------------------------------------


@BAD
@pytest.mark.timeout(60)
def test_unauthenticated_execute_runs_nothing(bad: str, sockdir: Path) -> None:
    with running_agent(sockdir) as agent:
        stub = agent.stub()
        error = _unauthenticated(
            lambda: stub.Execute(
                pb.ExecuteRequest(code=agent.marker_code()),
                metadata=BAD_METADATA[bad](agent.token),
                timeout=10,
            )
        )
        assert "token" in (error.details() or "")
        assert not agent.marker.exists()
        ok = stub.Execute(
            pb.ExecuteRequest(code="print('pwned' in globals())"),
            metadata=agent.metadata,
            timeout=10,
        )
        assert ok.stdout == "False\n"
        value = stub.GetVariable(
            pb.GetVariableRequest(name="pwned"), metadata=agent.metadata, timeout=10
        )
        assert not value.found
        # The control: the same cell with the right token does run.
        stub.Execute(
            pb.ExecuteRequest(code=agent.marker_code()), metadata=agent.metadata, timeout=10
        )
        assert agent.marker.exists()


@BAD
@pytest.mark.timeout(60)
def test_unauthenticated_load_context_loads_nothing(bad: str, sockdir: Path) -> None:
    def chunks() -> Iterator[pb.ContextChunk]:
        data = b"secret context " * 200_000  # several chunks
        for i, piece in enumerate(codec.chunks(data)):
            first = i == 0
            yield pb.ContextChunk(
                index=7 if first else 0,
                kind=pb.CONTEXT_KIND_BYTES if first else pb.CONTEXT_KIND_UNSPECIFIED,
                data=bytes(piece),
                total_bytes=len(data) if first else 0,
            )

    with running_agent(sockdir) as agent:
        stub = agent.stub()
        _unauthenticated(
            lambda: stub.LoadContext(chunks(), metadata=BAD_METADATA[bad](agent.token), timeout=10)
        )
        value = stub.GetVariable(
            pb.GetVariableRequest(name="context_7"), metadata=agent.metadata, timeout=10
        )
        assert not value.found
        response = stub.LoadContext(chunks(), metadata=agent.metadata, timeout=10)
        assert response.type_name == "bytes" and response.length == 3_000_000


@BAD
@pytest.mark.timeout(60)
def test_unauthenticated_subcalls_stream_cannot_take_over(bad: str, sockdir: Path) -> None:
    with running_agent(sockdir) as agent:
        host = AgentClient(Endpoint(agent.target, agent.token))
        try:
            host.wait_ready(10)

            def dispatch(request: pb.SubcallRequest) -> None:
                prompt = codec.loads(request.prompts[0])
                completion = RLMChatCompletion("host", prompt, f"pong:{prompt}", UsageSummary(), 0)
                host.respond(
                    pb.SubcallResponse(
                        id=request.id, completions=[codec.completion_to_bytes(completion)]
                    )
                )

            host.open_subcalls(dispatch, heartbeat_interval=0.2)
            stub = agent.stub()

            def ask(prompt: str) -> str:
                response = stub.Execute(
                    pb.ExecuteRequest(code=f"print(llm_query({prompt!r}))"),
                    metadata=agent.metadata,
                    timeout=20,
                )
                assert response.error == "", response.stderr
                return str(response.stdout)

            assert ask("before") == "pong:before\n"  # the host's stream is attached

            # An intruder opens its own stream; were it accepted, it would replace the
            # host's stream and receive the cell's requests.
            received: list[pb.AgentMessage] = []

            def intrude() -> None:
                messages = iter([pb.HostMessage(heartbeat=pb.Heartbeat(sent_at=1.0))])
                call = stub.Subcalls(messages, metadata=BAD_METADATA[bad](agent.token))
                received.extend(call)

            _unauthenticated(intrude)
            assert received == []
            assert ask("after") == "pong:after\n"
            assert host.stream_error is None
        finally:
            host.close()


@pytest.mark.parametrize("bad", ["wrong-token", "no-metadata"])
@pytest.mark.timeout(60)
def test_other_calls_are_rejected_before_they_act(bad: str, sockdir: Path) -> None:
    with running_agent(sockdir) as agent:
        stub = agent.stub()
        metadata = BAD_METADATA[bad](agent.token)
        # Handshake: tool source would run in the namespace.
        tool = pb.Tool(name="t", source=agent.marker_code("t"))
        _unauthenticated(
            lambda: stub.Handshake(
                pb.HandshakeRequest(protocol_version=PROTOCOL_VERSION, tools=[tool]),
                metadata=metadata,
                timeout=10,
            )
        )
        assert not agent.marker.exists()
        # SetVariable: nothing is bound.
        _unauthenticated(
            lambda: stub.SetVariable(
                pb.SetVariableRequest(name="planted", json=codec.dumps("evil")),
                metadata=metadata,
                timeout=10,
            )
        )
        planted = stub.GetVariable(
            pb.GetVariableRequest(name="planted"), metadata=agent.metadata, timeout=10
        )
        assert not planted.found
        # GetVariable: the value does not leak, not even in the error.
        stub.SetVariable(
            pb.SetVariableRequest(name="private", json=codec.dumps("the-private-value")),
            metadata=agent.metadata,
            timeout=10,
        )
        error = _unauthenticated(
            lambda: stub.GetVariable(
                pb.GetVariableRequest(name="private"), metadata=metadata, timeout=10
            )
        )
        assert "the-private-value" not in str(error)
        # Close: the agent keeps running.
        _unauthenticated(lambda: stub.Close(pb.CloseRequest(), metadata=metadata, timeout=10))
        alive = stub.Execute(
            pb.ExecuteRequest(code="print(1)"), metadata=agent.metadata, timeout=10
        )
        assert alive.stdout == "1\n"
        assert agent.process.poll() is None


# -- 3. no token, no agent ---------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("flags", "stdin_text"),
    [
        (["--secrets-stdin"], ""),
        (["--secrets-stdin"], '{"token": ""}\n'),
        (["--secrets-stdin"], '{"tls_cert": "x"}\n'),
        ([], None),
    ],
    ids=["empty-stdin", "empty-token", "no-token-key", "no-source"],
)
def test_agent_without_a_token_refuses_to_start(
    flags: list[str], stdin_text: str | None, sockdir: Path
) -> None:
    socket = sockdir / "agent.sock"
    command = [sys.executable, "-m", "rlm_core.agent", "--listen", f"unix:{socket}", *flags]
    process = spawn(command, stdin_text, _agent_env(), sockdir)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "no session token" in err
    assert "RLM-AGENT-READY" not in out
    assert not socket.exists()


@pytest.mark.timeout(60)
def test_agent_has_no_command_line_option_for_the_token(sockdir: Path) -> None:
    command = [sys.executable, "-m", "rlm_core.agent", "--token", "abc", "--listen", "unix:x"]
    process = spawn(command, None, _agent_env(), sockdir)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "unrecognized arguments: --token" in err


# -- 4. TLS with a pinned per-session certificate ------------------------------------------------


@pytest.mark.timeout(60)
def test_tls_environment_runs_cells_end_to_end() -> None:
    env = SubprocessEnvironment(tls=True)
    env.start(Session(subcalls=Handler()))
    try:
        assert env._client is not None
        endpoint = env._client.endpoint
        assert endpoint.server_certificate is not None
        assert b"BEGIN CERTIFICATE" in endpoint.server_certificate
        assert "tls" in repr(endpoint)
        env.add_context({"rows": [1, 2, 3]})
        result = env.execute("print(sum(context['rows']), llm_query_batched(['a', 'b']))")
        assert result.error is None, result.stderr
        assert result.stdout == "6 ['llm:a', 'llm:b']\n"
        env.set_variable("x", [1])
        env.extend_variable("x", [2, 3])
        assert env.get_variable("x") == [1, 2, 3]
        # The agent speaks TLS only: a plaintext channel to the same socket gets nowhere.
        with grpc.insecure_channel(endpoint.target) as channel:
            stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as info:
                stub.GetVariable(
                    pb.GetVariableRequest(name="x"), metadata=env._client.metadata, timeout=10
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_tls_pinning_rejects_any_other_certificate(sockdir: Path) -> None:
    with running_agent(sockdir, tls=True, tcp=True) as agent:
        assert agent.target.startswith("127.0.0.1:")
        request = pb.ExecuteRequest(code=agent.marker_code())

        # Another self-signed certificate for the very same name is not trusted.
        impostor = make_tls_material().certificate
        with pytest.raises(grpc.RpcError) as wrong_cert:
            agent.stub(root_certificate=impostor).Execute(
                request, metadata=agent.metadata, timeout=10
            )
        assert wrong_cert.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not agent.marker.exists()

        # Plaintext to a TLS agent fails too.
        with pytest.raises(grpc.RpcError) as plaintext:
            agent.stub(plaintext=True).Execute(request, metadata=agent.metadata, timeout=10)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not agent.marker.exists()

        # TLS does not replace the token: the pinned certificate with a wrong token fails.
        pinned = agent.stub()
        _unauthenticated(
            lambda: pinned.Execute(request, metadata=auth_metadata("nope"), timeout=10)
        )
        assert not agent.marker.exists()

        # The control: the pinned certificate and the token work.
        response = pinned.Execute(request, metadata=agent.metadata, timeout=10)
        assert response.error == ""
        assert agent.marker.exists()


# -- 5. protocol versions --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_handshake_with_another_protocol_version_is_refused(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_agent(sockdir) as agent:
        stub = agent.stub()
        with pytest.raises(grpc.RpcError) as info:
            stub.Handshake(
                pb.HandshakeRequest(protocol_version=999, host_version="9.9"),
                metadata=agent.metadata,
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = info.value.details() or ""
        assert "protocol version mismatch" in details
        assert "999" in details and f"speaks {PROTOCOL_VERSION}" in details

        monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 999)
        client = AgentClient(Endpoint(agent.target, agent.token))
        try:
            with pytest.raises(ProtocolMismatchError, match="protocol version mismatch"):
                client.handshake(0, [], 120.0, timeout=10)
        finally:
            client.close()


@pytest.mark.timeout(60)
def test_environment_start_raises_protocol_mismatch_and_stops_the_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 999)
    env = SubprocessEnvironment()
    try:
        with pytest.raises(ProtocolMismatchError, match="999"):
            env.start(Session(subcalls=Handler()))
        assert issubclass(ProtocolMismatchError, SandboxError)
        assert env.launcher is not None and env.launcher.process is not None
        assert env.launcher.process.wait(timeout=20) is not None
    finally:
        env.close()


class _NewerAgent(pb_grpc.AgentServicer):
    def Handshake(self, request: pb.HandshakeRequest, context: Any) -> pb.HandshakeResponse:
        return pb.HandshakeResponse(protocol_version=PROTOCOL_VERSION + 1, agent_version="9.9")


@pytest.mark.timeout(60)
def test_client_refuses_an_agent_that_answers_with_another_version(sockdir: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AgentServicer_to_server(_NewerAgent(), server)  # type: ignore[no-untyped-call]
    target = f"unix:{sockdir / 'newer.sock'}"
    server.add_insecure_port(target)
    server.start()
    client = AgentClient(Endpoint(target, "t"))
    try:
        with pytest.raises(ProtocolMismatchError) as info:
            client.handshake(0, [], 30.0, timeout=10)
        assert f"host speaks {PROTOCOL_VERSION}" in str(info.value)
        assert f"9.9 speaks {PROTOCOL_VERSION + 1}" in str(info.value)
    finally:
        client.channel.close()
        server.stop(grace=None)


# -- 6. message size limits --------------------------------------------------------------------


@pytest.fixture
def big_env() -> Iterator[SubprocessEnvironment]:
    env = SubprocessEnvironment()
    env.start(Session(subcalls=Handler()))
    yield env
    env.close()


def test_the_message_limit_is_64_mib() -> None:
    assert MAX_MESSAGE_BYTES == 64 * 1024 * 1024
    assert OVER_LIMIT > MAX_MESSAGE_BYTES


@pytest.mark.timeout(60)
def test_oversized_llm_query_prompt_is_an_error_string(big_env: SubprocessEnvironment) -> None:
    result = big_env.execute(
        f"reply = llm_query('x' * {OVER_LIMIT})\nprint(reply[:300])\nprint(len(reply) < 1000)"
    )
    assert result.error is None, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("Error: ")
    assert "64 MiB message limit" in first
    assert second == "True"
    # The stream is still usable.
    again = big_env.execute("print(llm_query('small'), llm_query_batched(['a']))")
    assert again.stdout == "llm:small ['llm:a']\n"


@pytest.mark.timeout(60)
def test_oversized_llm_query_answer_is_an_error_string(big_env: SubprocessEnvironment) -> None:
    result = big_env.execute("reply = llm_query('huge')\nprint(reply[:300])")
    assert result.error is None, result.stderr
    assert result.stdout.startswith("Error: ")
    assert "64 MiB message limit" in result.stdout
    assert big_env.execute("print(llm_query('small'))").stdout == "llm:small\n"


@pytest.mark.timeout(60)
def test_oversized_variable_read_is_a_sandbox_error(big_env: SubprocessEnvironment) -> None:
    big_env.execute(f"big = 'x' * {OVER_LIMIT}\nsmall = 'ok'")
    with pytest.raises(SandboxError, match="64 MiB message limit") as info:
        big_env.get_variable("big")
    assert "'big'" in str(info.value)
    assert big_env.get_variable("small") == "ok"


@pytest.mark.timeout(60)
def test_oversized_variable_write_is_a_clear_error(big_env: SubprocessEnvironment) -> None:
    big_env.set_variable("items", [1])
    with pytest.raises(codec.MessageTooLargeError, match="64 MiB message limit") as info:
        big_env.set_variable("v", "z" * OVER_LIMIT)
    assert "'v'" in str(info.value)
    assert info.value.limit == MAX_MESSAGE_BYTES and info.value.size > MAX_MESSAGE_BYTES
    with pytest.raises(codec.MessageTooLargeError, match="64 MiB message limit"):
        big_env.extend_variable("items", ["z" * OVER_LIMIT])
    result = big_env.execute("print('v' in globals(), items)")
    assert result.stdout == "False [1]\n"


@pytest.mark.timeout(60)
def test_oversized_cell_result_is_a_cell_error(big_env: SubprocessEnvironment) -> None:
    result = big_env.execute(
        f"answer['content'] = 'x' * {OVER_LIMIT}\nanswer['ready'] = True\nprint('set')"
    )
    assert result.error is not None and "64 MiB message limit" in result.error
    assert "64 MiB message limit" in result.stderr
    assert result.final_answer is None
    assert result.stdout == "set\n"
    fixed = big_env.execute("answer['content'] = 'short'")
    assert fixed.error is None and fixed.final_answer == "short"


@pytest.mark.timeout(60)
def test_oversized_cell_source_is_a_sandbox_error(big_env: SubprocessEnvironment) -> None:
    with pytest.raises(SandboxError, match="running a cell"):
        big_env.execute("#" + "z" * OVER_LIMIT)
    assert big_env.execute("print(2)").stdout == "2\n"


@pytest.mark.timeout(60)
def test_contexts_larger_than_the_limit_are_streamed_in_chunks(
    big_env: SubprocessEnvironment,
) -> None:
    big_env.add_context("c" * OVER_LIMIT)
    result = big_env.execute("print(len(context), context[:3])")
    assert result.stdout == f"{OVER_LIMIT} ccc\n"


# -- 7. the agent's imports ----------------------------------------------------------------------

_IMPORT_PROBE = """
import atexit, json, sys
before = set(sys.modules)
def dump():
    with open(sys.argv[1], "w") as f:
        json.dump({"before": sorted(before), "after": sorted(sys.modules)}, f)
atexit.register(dump)
from rlm_core.agent.main import main
sys.exit(main(sys.argv[2:]))
"""

_GRPC_PROBE = """
import json, sys
before = set(sys.modules)
import grpc, google.protobuf.message, google.protobuf.descriptor_pool
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.timeout(60)
def test_agent_imports_only_stdlib_grpc_and_protobuf(sockdir: Path) -> None:
    dump = sockdir / "modules.json"
    prefix = [sys.executable, "-c", _IMPORT_PROBE, str(dump)]
    # A whole TLS session: handshake with tools, a context, cells with sub-calls, variables.
    with running_agent(sockdir, tls=True, prefix=prefix) as agent:
        assert agent.tls is not None
        host = AgentClient(Endpoint(agent.target, agent.token, agent.tls.certificate))
        try:
            host.wait_ready(10)
            host.handshake(
                1,
                [pb.Tool(name="k", json_value=b"3"), pb.Tool(name="f", source="def f(): return 1")],
                120.0,
                timeout=10,
            )

            def dispatch(request: pb.SubcallRequest) -> None:
                done = RLMChatCompletion("m", "p", "r", UsageSummary(), 0.0)
                host.respond(
                    pb.SubcallResponse(id=request.id, completions=[codec.completion_to_bytes(done)])
                )

            host.open_subcalls(dispatch, heartbeat_interval=0.2)
            chunk = pb.ContextChunk(index=0, kind=pb.CONTEXT_KIND_JSON, data=b"[1]", total_bytes=3)
            host.stub.LoadContext(iter([chunk]), metadata=host.metadata, timeout=10)
            cell = "print(llm_query('a'), rlm_query_batched(['b']), k, f(), context)\n1/0"
            result = host.stub.Execute(
                pb.ExecuteRequest(code=cell, timeout=30), metadata=host.metadata, timeout=30
            )
            assert result.stdout == "r ['r'] 3 1 [1]\n"
            host.stub.SetVariable(
                pb.SetVariableRequest(name="s", json=b'"v"'), metadata=host.metadata, timeout=10
            )
            host.stub.GetVariable(
                pb.GetVariableRequest(name="s"), metadata=host.metadata, timeout=10
            )
        finally:
            host.close()
        agent.process.wait(timeout=30)
    assert agent.process.returncode == 0, agent.output
    modules = json.loads(dump.read_text(encoding="utf-8"))
    imported = set(modules["after"]) - set(modules["before"])

    probe = subprocess.run(
        [sys.executable, "-c", _GRPC_PROBE],
        capture_output=True,
        text=True,
        env=_agent_env(),
        timeout=30,
        check=True,
    )
    grpc_own = {name.split(".")[0] for name in json.loads(probe.stdout)}
    allowed = set(sys.stdlib_module_names) | {"grpc", "google", "rlm_core"} | grpc_own
    top_level = {name.split(".")[0] for name in imported}
    assert top_level - allowed == set()
    # Which rlm_core modules it may load: the allow-list in test_layering.py.
    assert "rlm_core.agent.server" in imported  # the probe saw the real agent


# -- 8. generated code is fresh ----------------------------------------------------------------


def _copy_generator(root: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "proto", root / "proto", ignore=ignore)
    shutil.copytree(ROOT / "rlm_core" / "_proto", root / "rlm_core" / "_proto", ignore=ignore)
    return root / "proto" / "generate.py"


def _run_generator(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=script.parent.parent,
    )


@pytest.mark.timeout(60)
def test_generated_code_is_fresh() -> None:
    proc = _run_generator(ROOT / "proto" / "generate.py", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


@pytest.mark.timeout(60)
def test_freshness_check_catches_an_edited_proto(tmp_path: Path) -> None:
    script = _copy_generator(tmp_path)
    assert _run_generator(script, "--check").returncode == 0  # the copy starts fresh

    proto = tmp_path / "proto" / "rlm" / "v1" / "agent.proto"
    text = proto.read_text(encoding="utf-8")
    anchor = "  double heartbeat_timeout = 5;\n"
    assert anchor in text
    proto.write_text(text.replace(anchor, anchor + "  string extra = 6;\n"), encoding="utf-8")
    stale = _run_generator(script, "--check")
    assert stale.returncode == 1
    assert "stale" in stale.stdout and "make proto" in stale.stdout
    assert "rlm_core/_proto/rlm/v1/agent_pb2.py" in stale.stdout

    # `make proto` (the generator without --check) brings the copy up to date again.
    assert _run_generator(script).returncode == 0
    assert _run_generator(script, "--check").returncode == 0
    # ...and the committed tree was not touched.
    assert _run_generator(ROOT / "proto" / "generate.py", "--check").returncode == 0
