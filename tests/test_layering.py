"""What each side of the project really loads, observed in real processes.

The import-linter contracts in ``make lint`` check the import graph statically; these tests
check the modules a running process actually imports:

* the agent (``python -m rlm_core.agent``) loads only an allowed set of ``rlm_core`` modules,
  and no third-party package besides grpcio and protobuf (and what those two load);
* a completion on the ``local`` environment loads no gRPC at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest

from rlm_core import __version__
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import AUTH_METADATA_KEY, PROTOCOL_VERSION, READY_PREFIX

ROOT = Path(__file__).resolve().parent.parent

AGENT_MODULES = frozenset(
    {"rlm_core", "rlm_core.repl", "rlm_core.vocabulary", "rlm_core.types", "rlm_core.exceptions"}
)
"""The ``rlm_core`` modules outside its own packages that the agent may load."""

AGENT_PACKAGES = ("rlm_core.agent", "rlm_core._proto")
"""``rlm_core`` packages the agent may load whole (the sandbox side, the generated code)."""

AGENT_THIRD_PARTY = frozenset({"grpc", "google"})
"""Top-level third-party packages the agent may load (``google`` for protobuf only)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_AGENT_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output (one line per import)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return names


def _imports_of(code: str) -> set[str]:
    """Every module a fresh interpreter imports to run ``code``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    return _imported(proc.stderr)


def _read_line(stream: IO[str], timeout: float) -> str:
    """The next line of ``stream``, or ``""`` when none comes within ``timeout`` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


@contextlib.contextmanager
def _agent_process(workdir: Path, token: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -X importtime -m rlm_core.agent`` on a Unix socket in its own process group;
    yields the process and the socket's target. Its stderr goes to ``workdir/stderr``."""
    target = f"unix:{workdir / 'agent.sock'}"
    env = _env()
    env["RLM_AGENT_TOKEN"] = token
    command = [sys.executable, "-X", "importtime", "-m", "rlm_core.agent"]
    command += ["--listen", target, "--heartbeat-timeout", "120"]
    with open(workdir / "stderr", "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    assert process.stdout is not None
    try:
        line = _read_line(process.stdout, 30)
        assert line.startswith(READY_PREFIX), (
            f"the agent did not start: {line!r}\n{(workdir / 'stderr').read_text()[-2000:]}"
        )
        yield process, target
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stdout.close()
        with contextlib.suppress(ProcessLookupError):  # nothing of its group is left running
            os.killpg(process.pid, 0)
            pytest.fail("the agent left processes behind")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory (Unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rlm-layer-"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(90)
def test_agent_loads_only_the_sandbox_side_grpc_and_protobuf(workdir: Path) -> None:
    token = secrets.token_urlsafe(32)
    metadata = ((AUTH_METADATA_KEY, token),)
    with (
        _agent_process(workdir, token) as (process, target),
        grpc.insecure_channel(target) as channel,
    ):
        stub = pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
        hello = stub.Handshake(
            pb.HandshakeRequest(
                protocol_version=PROTOCOL_VERSION,
                host_version=__version__,
                depth=1,
                heartbeat_timeout=120.0,
            ),
            metadata=metadata,
            timeout=30,
        )
        assert hello.protocol_version == PROTOCOL_VERSION
        cell = "total = sum(range(10))\nprint(total)\nanswer['content'] = str(total)\n"
        cell += "answer['ready'] = True"
        result = stub.Execute(
            pb.ExecuteRequest(code=cell, timeout=30), metadata=metadata, timeout=30
        )
        assert (result.stdout, result.error, result.final_answer) == ("45\n", "", "45")
        stub.Close(pb.CloseRequest(), metadata=metadata, timeout=10)
    stderr = (workdir / "stderr").read_text(encoding="utf-8")
    assert process.returncode == 0, stderr[-2000:]

    loaded = _imported(stderr) - _imports_of("pass")
    assert "rlm_core.agent.server" in loaded  # the probe saw the real agent serve

    ours = {name for name in loaded if name.split(".")[0] == "rlm_core"}
    unexpected = {
        name
        for name in ours
        if name not in AGENT_MODULES
        and not any(name == p or name.startswith(p + ".") for p in AGENT_PACKAGES)
    }
    assert unexpected == set(), "the agent loaded rlm_core modules outside the sandbox side"

    # Whatever grpcio and protobuf load of their own accord is theirs to choose.
    own = _imports_of("import grpc, google.protobuf.message, google.protobuf.descriptor_pool")
    allowed = set(sys.stdlib_module_names) | AGENT_THIRD_PARTY | {"rlm_core"}
    allowed |= {name.split(".")[0] for name in own}
    third_party = {name.split(".")[0] for name in loaded} - allowed
    assert third_party == set(), "the agent loaded third-party packages besides grpc/protobuf"
    google = {n for n in loaded if n.startswith("google.") and n not in own}
    assert all(n == "google.protobuf" or n.startswith("google.protobuf.") for n in google)


_LOCAL_COMPLETION = """
import json, sys
from rlm_core import RLM

cell = "reply = llm_query('hi')\\nanswer['content'] = reply\\nanswer['ready'] = True"
rlm = RLM(
    environment="local",
    backend="scripted",
    backend_kwargs={"responses": ["```repl\\n" + cell + "\\n```", "sub reply"]},
)
result = rlm.completion("a context", root_prompt="what?")
print(json.dumps({"response": result.response, "modules": sorted(sys.modules)}))
"""


@pytest.mark.timeout(60)
def test_local_completion_loads_no_grpc() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LOCAL_COMPLETION],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["response"] == "sub reply"  # a full completion with a sub-call ran
    modules = set(report["modules"])
    assert "rlm_core.environments.local" in modules
    grpc_modules = {
        name
        for name in modules
        if name.split(".")[0] == "grpc" or name.startswith(("google.protobuf", "rlm_core._proto"))
    }
    ours = sorted(n for n in modules if n.startswith(("rlm_core.environments.", "rlm_core.bridge")))
    assert sorted(grpc_modules) == [], f"a local completion loaded gRPC; rlm_core loaded {ours}"
