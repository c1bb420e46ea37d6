"""The launcher contract: one request object, three carriers, the first contract still
served (with one warning), and launch failures that read once."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from hosts import Host
from scripts import EchoHandler

from rlm_core import __version__
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import AUTH_METADATA_KEY, PROTOCOL_VERSION
from rlm_core.bridge.carriers import Dial
from rlm_core.bridge.client import AgentClient, Endpoint
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import Session
from rlm_core.environments.launcher import (
    CALL_TIMEOUT_MARGIN,
    AgentSecrets,
    Launcher,
    LaunchRequest,
)
from rlm_core.environments.launching import StderrTail, start_agent
from rlm_core.environments.subprocess import start_process
from rlm_core.exceptions import SandboxError

pytestmark = pytest.mark.timeout(120)

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def _agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


# -- the first contract, through the deprecation path ---------------------------------------


class FirstContractLauncher(Launcher):
    """A launcher written for ``launch(secrets, heartbeat_timeout) -> Endpoint``."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def launch(self, secrets: AgentSecrets, heartbeat_timeout: float) -> Endpoint:  # type: ignore[override]
        argv = [sys.executable, "-m", "rlm_core.agent", "--listen", "127.0.0.1:0"]
        argv += ["--secrets-stdin", "--heartbeat-timeout", str(heartbeat_timeout)]
        self.process = start_process(
            [*argv, "--die-with-parent", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_agent_env(),
        )
        ready = start_agent(self.process, secrets.to_json(), time.monotonic() + 60)
        return Endpoint(f"127.0.0.1:{ready.port}", secrets.token)

    def terminate(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, 9)
            self.process.wait()


class FirstContractEnvironment(AgentEnvironment):
    name = "first-contract"

    def make_launcher(self) -> Launcher:
        return FirstContractLauncher()


@pytest.mark.parametrize("tls", [False, True])
def test_a_launcher_of_the_first_contract_works_and_warns_once(tls: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            env = FirstContractEnvironment(tls=tls)
            env.start(Session(subcalls=EchoHandler()))
            try:
                assert env.execute("print(llm_query('hi'))").stdout == "llm:hi\n"
            finally:
                env.close()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) <= 1  # once per launcher class in the process
    if deprecations:
        message = str(deprecations[0].message)
        assert "FirstContractLauncher" in message and "LaunchRequest" in message


# -- the request ----------------------------------------------------------------------------


def _request(**kwargs: Any) -> LaunchRequest:
    secrets = AgentSecrets("the-token")
    return LaunchRequest("probe", secrets, 30.0, time.monotonic() + 10, **kwargs)


def test_an_sdk_call_may_outlast_the_deadline_by_a_margin() -> None:
    """So the start's own deadline, not the SDK's timeout, reports a start that ran out."""
    request = _request()
    assert 10 + CALL_TIMEOUT_MARGIN >= request.call_timeout() > 9 + CALL_TIMEOUT_MARGIN
    spent = LaunchRequest("probe", AgentSecrets("t"), 30.0, time.monotonic() - 1)
    assert spent.call_timeout() == 1.0 + CALL_TIMEOUT_MARGIN


def test_agent_argv_for_each_carrier_never_holds_a_secret() -> None:
    request = _request()
    dial = request.agent_argv("dial", listen="0.0.0.0:7000")
    assert dial[:3] == ["python3", "-m", "rlm_core.agent"]
    assert dial[3:5] == ["--listen", "0.0.0.0:7000"] and "--secrets-stdin" in dial
    stdio = request.agent_argv("stdio", python="/usr/bin/python3", framing="base64")
    assert stdio[0] == "/usr/bin/python3" and stdio[3:6] == ["--stdio", "--framing", "base64"]
    reverse = request.agent_argv("reverse", dial="tunnel.example:443", secrets_file="/run/s")
    assert reverse[3:5] == ["--dial", "tunnel.example:443"]
    assert reverse[5:7] == ["--secrets-file", "/run/s"]
    for argv in (dial, stdio, reverse):
        assert "the-token" not in " ".join(argv)
        assert argv[-2:] == ["--heartbeat-timeout", "30"]
    assert request.agent_command("stdio").startswith("python3 -m rlm_core.agent --stdio")
    with pytest.raises(ValueError, match="dial="):
        request.agent_argv("reverse")
    with pytest.raises(ValueError, match="carrier"):
        request.agent_argv("carrier-pigeon")  # type: ignore[arg-type]


def test_the_agent_accepts_every_argv_the_request_builds() -> None:
    # The agent's own parser, not a copy of it, judges the command lines.
    from rlm_core.agent.main import build_parser

    request = _request()
    parser = build_parser()
    for argv in (
        request.agent_argv("dial"),
        request.agent_argv("stdio", framing="base64"),
        request.agent_argv("reverse", dial="127.0.0.1:9"),
        request.agent_argv("dial", secrets_file="/tmp/x", extra=["--memory-limit-mb", "9"]),
    ):
        parser.parse_args(argv[3:])


class RecordingLauncher(Launcher):
    seen: list[LaunchRequest] = []

    def launch(self, request: LaunchRequest) -> Dial:
        RecordingLauncher.seen.append(request)
        request.progress("creating the sandbox")
        raise SandboxError("the provider refused: quota exceeded")

    def terminate(self) -> None:
        pass

    def diagnostics(self) -> str:
        return "line one of stderr\nline two of stderr"

    def exit_status(self, wait: float = 0.0) -> int | None:
        return 3


class RecordingEnvironment(AgentEnvironment):
    name = "recording"

    def make_launcher(self) -> Launcher:
        return RecordingLauncher()


def test_the_request_carries_the_deadline_lifetime_and_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = RecordingEnvironment(startup_timeout=12, max_lifetime=600, heartbeat_timeout=9)
    RecordingLauncher.seen.clear()
    before = time.monotonic()
    with caplog.at_level("INFO", logger="rlm_core.environments"), pytest.raises(SandboxError):
        env.start(Session(subcalls=EchoHandler()))
    (request,) = RecordingLauncher.seen
    assert before + 11 < request.deadline <= time.monotonic() + 12
    assert request.max_lifetime == 600 and request.heartbeat_timeout == 9
    assert request.environment == "recording"
    assert "creating the sandbox" in caplog.text
    assert "the-token" not in repr(request) and "token=<hidden>" in repr(request)


def test_a_launch_failure_reads_once_with_status_and_stderr() -> None:
    env = RecordingEnvironment()
    with pytest.raises(SandboxError) as caught:
        env.start(Session(subcalls=EchoHandler()))
    message = str(caught.value)
    assert message.startswith(
        "could not start the recording agent: the provider refused: quota exceeded (exit status 3)"
    )
    assert "SandboxError" not in message  # the type is not named in the text
    assert message.count("line one of stderr") == 1
    assert message.count("quota exceeded") == 1


def test_a_crashing_subprocess_agent_is_reported_once(tmp_path: Path) -> None:
    from rlm_core.environments.subprocess import SubprocessEnvironment

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no grpc here' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = SubprocessEnvironment(python=str(fake), prewarm=False)
    with pytest.raises(SandboxError) as caught:
        env.start(Session(subcalls=EchoHandler()))
    env.close()
    message = str(caught.value)
    assert message.startswith("could not start the subprocess agent: the agent did not start")
    assert "(exit status 3)" in message
    assert message.count("ImportError: no grpc here") == 1, message


def test_the_default_cleanup_stops_nothing() -> None:
    assert Launcher.cleanup(ids=["sb-1"], tag="t") == []
    assert RecordingLauncher().sandbox_id is None


# -- dial: metadata, authority, a proxy's own Authorization --------------------------------


class Recorder(pb_grpc.AgentServicer):
    """A stand-in agent that records each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def Handshake(self, request: pb.HandshakeRequest, context: grpc.ServicerContext) -> Any:
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.HandshakeResponse(
            protocol_version=PROTOCOL_VERSION, agent_version=__version__, pid=os.getpid()
        )

    def Subcalls(self, request_iterator: Iterator[Any], context: Any) -> Any:
        self.metadata.append(dict(context.invocation_metadata()))
        for _ in request_iterator:
            pass
        return iter(())


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, int]]:
    servicer = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AgentServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def test_dial_sends_extra_metadata_beside_the_session_token(
    recorder: tuple[Recorder, int],
) -> None:
    servicer, port = recorder
    route = Dial(
        f"127.0.0.1:{port}",
        authority="sandbox-7.proxy.example",
        metadata={"authorization": "Bearer proxy-credential", "x-preview-token": "p"},
    )
    client = AgentClient(route, "session-token")
    try:
        info = client.begin(0, [], 30.0, 10.0, lambda request: None, timeout=10)
        assert info.pid == os.getpid()
    finally:
        client.close(send_close=False)
    seen = servicer.metadata[0]
    assert seen[AUTH_METADATA_KEY] == "session-token"
    assert seen["authorization"] == "Bearer proxy-credential"  # the proxy's, untouched
    assert seen["x-preview-token"] == "p"
    assert "proxy-credential" not in repr(route)


def test_dial_refuses_upper_case_metadata_keys_and_unknown_tls_modes() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        Dial("h:1", metadata={"X-Daytona-Preview-Token": "t"})
    with pytest.raises(ValueError, match="tls"):
        Dial("h:1", tls="maybe")  # type: ignore[arg-type]


def _ca_and_server_cert(tmp_path: Path, label: str) -> tuple[Path, bytes, bytes]:
    """A throwaway CA (standing in for the system's roots) and a certificate it signed
    for ``localhost`` (standing in for a provider's public endpoint)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    roots = tmp_path / f"{label}-roots.pem"
    roots.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return (
        roots,
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


PUBLIC_TLS_HOST = """
import json, os, subprocess, sys, time
from rlm_core.bridge.carriers import Dial
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import Session
from rlm_core.environments.launcher import Launcher
from rlm_core.environments.launching import start_agent
from rlm_core.environments.subprocess import start_process
from scripts import EchoHandler

cert, key, name = sys.argv[1], sys.argv[2], sys.argv[3]

class PublicEndpointLauncher(Launcher):
    # The agent serves a certificate a (test) public CA signed, as a provider's TLS
    # endpoint would; the host trusts only its system roots.
    def launch(self, request):
        argv = request.agent_argv("dial", python=sys.executable, listen="127.0.0.1:0")
        self.p = start_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        secrets = json.dumps({"token": request.secrets.token,
                              "tls_cert": open(cert).read(), "tls_key": open(key).read()})
        ready = start_agent(self.p, secrets, request.deadline)
        return Dial(f"{name}:{ready.port}", tls="public")
    def terminate(self):
        self.p.kill(); self.p.wait()

class PublicEnvironment(AgentEnvironment):
    name = "public-tls"
    def make_launcher(self):
        return PublicEndpointLauncher()

env = PublicEnvironment(startup_timeout=10)
try:
    env.start(Session(subcalls=EchoHandler()))
    print("RESULT", env.execute("print(llm_query('over public tls'))").stdout.strip())
except Exception as exc:
    print("FAILED", type(exc).__name__, str(exc).splitlines()[0])
finally:
    env.close()
"""


@pytest.mark.parametrize(
    ("name", "trusted", "expected"),
    [
        ("localhost", True, "RESULT llm:over public tls"),
        ("localhost", False, "FAILED SandboxError"),  # not signed by a trusted root
    ],
)
def test_public_tls_checks_the_system_roots_and_the_real_host_name(
    tmp_path: Path, name: str, trusted: bool, expected: str
) -> None:
    roots, cert, key = _ca_and_server_cert(tmp_path, "signer")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    if not trusted:  # the system's roots: a CA that did not sign the endpoint's certificate
        roots = _ca_and_server_cert(tmp_path, "stranger")[0]
    script = textwrap.dedent(PUBLIC_TLS_HOST)
    paths = (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), name)
    with Host(script, *paths, env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots)}) as host:
        status, output, errors = host.finish(timeout=90)
        assert host.leftovers() == []
    assert status == 0, errors
    assert expected in output, output


def test_stderr_tail_keeps_the_last_lines() -> None:
    read, write = os.pipe()
    with os.fdopen(read, encoding="utf-8") as stream:
        tail = StderrTail(stream, lines=3)
        with os.fdopen(write, "w", encoding="utf-8") as out:
            out.write("".join(f"line {i}\n" for i in range(10)))
        deadline = time.monotonic() + 10
        while "line 9" not in tail.text() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert tail.text() == "line 7\nline 8\nline 9"


def test_stderr_tail_of_an_ended_process_waits_for_its_last_lines() -> None:
    def late() -> Iterator[str]:
        time.sleep(0.5)  # the process has ended; its last words are still in the pipe
        yield "ImportError: no grpc here\n"

    assert StderrTail(late(), ended=lambda: True).text() == "ImportError: no grpc here"


def test_stderr_tail_of_a_running_process_does_not_wait() -> None:
    never = threading.Event()

    def silent() -> Iterator[str]:
        never.wait()
        yield "never\n"

    try:
        assert StderrTail(silent(), ended=lambda: False).text() == ""
    finally:
        never.set()


def test_start_agent_skips_a_banner_and_reports_what_came_before(tmp_path: Path) -> None:
    script = (
        "import sys; sys.stdin.readline(); print('Welcome to the sandbox'); "
        "print('RLM-AGENT-READY port=4242 pid=77 carrier=dial'); print('later output')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    ready = start_agent(process, '{"token": "t"}', time.monotonic() + 30)
    assert (ready.port, ready.pid, ready.fields["carrier"]) == (4242, 77, "dial")
    assert ready.preamble == ("Welcome to the sandbox",)
    process.wait(timeout=30)


def test_start_agent_fails_plainly_when_the_process_ends_first() -> None:
    before = set(threading.enumerate())
    process = subprocess.Popen(
        [sys.executable, "-c", "print('Traceback: no module named grpc'); raise SystemExit(1)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(SandboxError, match=re.escape("no module named grpc")):
        start_agent(process, None, time.monotonic() + 30)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) - before == set()  # it left no thread of its own


def test_subprocess_stops_its_agent_at_the_end_of_its_lifetime() -> None:
    from hosts import wait_gone

    from rlm_core.environments.subprocess import SubprocessEnvironment
    from rlm_core.exceptions import SandboxCrashedError

    env = SubprocessEnvironment(max_lifetime=0.5, prewarm=False)
    env.start(Session(subcalls=EchoHandler()))
    try:
        assert env.launcher is not None and env.launcher.pid is not None
        assert wait_gone([env.launcher.pid], bound=60) == []
        with pytest.raises(SandboxCrashedError):
            env.execute("x = 1")
    finally:
        env.close()


class StuckStdin:
    """A provider stream whose stdin write never returns and whose stdout stays silent."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def send(self, data: bytes) -> None:
        self.closed.wait()

    def __iter__(self) -> Iterator[bytes]:
        self.closed.wait()
        return iter(())

    def close(self) -> None:
        self.closed.set()


class StuckLauncher(Launcher):
    def launch(self, request: LaunchRequest) -> Any:
        from rlm_core.bridge.carriers import Stdio

        return Stdio(StuckStdin())

    def terminate(self) -> None:
        pass


class StuckEnvironment(AgentEnvironment):
    name = "stuck"

    def make_launcher(self) -> Launcher:
        return StuckLauncher()


@pytest.mark.timeout(30)
def test_a_stdin_that_never_takes_the_secrets_fails_the_start_at_its_deadline() -> None:
    env = StuckEnvironment(startup_timeout=1)
    with pytest.raises(SandboxError, match="did not take its secrets in time"):
        env.start(Session(subcalls=EchoHandler()))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"carrier": "pigeon"}, "carrier must be 'dial' | 'stdio' | 'reverse'"),
        ({"framing": "hex"}, "framing must be 'binary' | 'base64'"),
    ],
)
def test_the_loopback_environment_refuses_an_unknown_carrier_or_framing(
    settings: dict[str, str], message: str
) -> None:
    from rlm_core import RLM, ConfigurationError

    with pytest.raises(ConfigurationError, match=re.escape(message)):
        RLM(backend="scripted", environment="loopback", environment_kwargs=settings)
