"""The relay carriers (``stdio`` and ``reverse``), with real agent processes and real gRPC.

Every session test starts ``python -m rlm_core.agent --stdio`` (or ``--dial``) as a
subprocess and talks to it with :class:`AgentClient` through the host's relay; fake agents
(small scripts) stand in only where the carrier itself must misbehave.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core.agent import PROTOCOL_VERSION, codec
from rlm_core.agent.framing import (
    CLOSE,
    DATA,
    MAGIC,
    OPEN,
    Frame,
    FrameDecoder,
    FramingError,
    Multiplexer,
    encode_frames,
    reverse_proof,
)
from rlm_core.bridge.carriers.reverse import ReverseListener
from rlm_core.bridge.carriers.stdio import ByteStream, PushStream, StdioRelay, pipe_stream
from rlm_core.bridge.client import AgentClient, Endpoint
from rlm_core.bridge.tls import new_token
from rlm_core.exceptions import SandboxError
from rlm_core.types import RLMChatCompletion, UsageSummary

ROOT = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "rlm_core.agent"]
MiB = 1024 * 1024

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")


# -- helpers ------------------------------------------------------------------------------


def _env(tmpdir: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_AGENT_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    return env


class Collector:
    """Reads a pipe to the end in a thread (an agent's stderr: its diagnostics)."""

    def __init__(self, pipe: Any) -> None:
        self.data = bytearray()
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe: Any) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self.data += chunk

    def text(self, wait: float = 0.0) -> str:
        self._thread.join(wait)
        return self.data.decode("utf-8", "replace")


@dataclass
class Relayed:
    """A real agent behind a host relay."""

    process: subprocess.Popen[bytes]
    relay: StdioRelay
    token: str
    target: str
    agent_tmp: str
    stderr: Collector
    clients: list[AgentClient] = field(default_factory=list)

    def client(self, subcalls: Callable[[pb.SubcallRequest], str] | None = None) -> AgentClient:
        """A new connected, handshaken client (with the Subcalls stream when asked)."""
        client = AgentClient(Endpoint(self.target, self.token))
        self.clients.append(client)
        client.wait_ready(20)
        handshake(client, timeout=20)
        if subcalls is not None:
            pool = futures.ThreadPoolExecutor(8)

            def answer(request: pb.SubcallRequest) -> None:
                prompt = codec.loads(request.prompts[0])
                text = subcalls(request)
                completion = RLMChatCompletion("host", prompt, text, UsageSummary(), 0)
                client.respond(
                    pb.SubcallResponse(
                        id=request.id, completions=[codec.completion_to_bytes(completion)]
                    )
                )

            client.open_subcalls(lambda r: pool.submit(answer, r), heartbeat_interval=0.5)
        return client


def handshake(client: AgentClient, timeout: float = 30) -> pb.HandshakeResponse:
    """The handshake, straight through the stub (a failure stays a ``grpc.RpcError``)."""
    request = pb.HandshakeRequest(protocol_version=PROTOCOL_VERSION, heartbeat_timeout=60.0)
    response: pb.HandshakeResponse = client.stub.Handshake(
        request, metadata=client.metadata, timeout=timeout
    )
    return response


def execute(client: AgentClient, code: str, timeout: float = 30) -> pb.ExecuteResponse:
    response: pb.ExecuteResponse = client.stub.Execute(
        pb.ExecuteRequest(code=code), metadata=client.metadata, timeout=timeout
    )
    return response


def load_context(client: AgentClient, payload: Any, index: int = 0) -> pb.LoadContextResponse:
    """Stream ``payload`` in chunks, as the environment's ``load_context`` does."""
    encoded = codec.encode_context_lazily(payload)

    def chunks() -> Iterator[pb.ContextChunk]:
        for i, piece in enumerate(encoded.pieces()):
            data = piece if isinstance(piece, bytes) else bytes(piece)
            if i == 0:
                yield pb.ContextChunk(
                    index=index, kind=encoded.kind, total_bytes=encoded.total_bytes, data=data
                )
            else:
                yield pb.ContextChunk(data=data)

    response: pb.LoadContextResponse = client.stub.LoadContext(
        chunks(), metadata=client.metadata, timeout=60
    )
    return response


def spawn(argv: list[str], agent_tmp: str | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(agent_tmp),
        cwd=agent_tmp or None,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process's whole group (everything it started) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rlm-relay")]


class StrChunks:
    """A :class:`ByteStream` like an SDK that hands back stdout as text decoded with
    ``errors="replace"``, in chunks split at random places (via :class:`PushStream`)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        def send(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        self.push = PushStream(send, close=stdin.close)
        rng = random.Random(7)

        def pump() -> None:
            import codecs

            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            for chunk in iter(lambda: stdout.read1(65536), b""):
                text = decoder.decode(chunk)
                while text:
                    cut = rng.randint(1, max(1, len(text)))
                    self.push.push(text[:cut])
                    text = text[cut:]
            self.push.end("the exec ended")

        threading.Thread(target=pump, daemon=True).start()

    def send(self, data: bytes) -> None:
        self.push.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        return iter(self.push)

    def close(self) -> None:
        self.push.close()


class CountingStream:
    """Wraps a stream: counts ``send`` calls and their bytes, and makes each cost a short
    round trip, like an exec stdin whose every write is one unary RPC."""

    def __init__(self, inner: ByteStream, delay: float = 0.002) -> None:
        self.inner = inner
        self.delay = delay
        self.sends = 0
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.sends += 1
        self.sent += len(data)
        time.sleep(self.delay)
        self.inner.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        return iter(self.inner)

    def close(self) -> None:
        self.inner.close()


@contextlib.contextmanager
def stdio_agent(
    framing: str = "binary",
    *,
    prefix: list[str] | None = None,
    extra: list[str] | None = None,
    wrap: Callable[[subprocess.Popen[bytes]], ByteStream] | None = None,
) -> Iterator[Relayed]:
    """A real ``--stdio`` agent behind a :class:`StdioRelay`; everything is stopped and
    removed afterwards."""
    agent_tmp = tempfile.mkdtemp(prefix="rlm-t-")
    argv = [*(prefix or []), *AGENT, "--stdio", "--secrets-stdin", "--framing", framing]
    process = spawn([*argv, "--heartbeat-timeout", "60", *(extra or [])], agent_tmp)
    assert process.stdin is not None and process.stdout is not None
    stderr = Collector(process.stderr)
    stream = wrap(process) if wrap else pipe_stream(process.stdin, process.stdout)
    relay = StdioRelay(stream, framing)
    token = new_token()
    try:
        relay.hand_secrets(json.dumps({"token": token}))
        relay.wait_ready(time.monotonic() + 30)
        target = relay.start()
        relayed = Relayed(process, relay, token, target, agent_tmp, stderr)
        try:
            yield relayed
        finally:
            for client in relayed.clients:
                client.close(timeout=2)
    finally:
        relay.close()
        if process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)  # it ends by itself once its carrier ends
        kill_group(process)
        import shutil

        shutil.rmtree(agent_tmp, ignore_errors=True)


def fake_agent(script: str) -> subprocess.Popen[bytes]:
    """A stand-in for the agent: ``script`` runs after it read the secrets line."""
    prelude = (
        "import os, sys, time\n"
        "line = b''\n"
        "while not line.endswith(b'\\n'):\n"
        "    line += os.read(0, 1)\n"
        "ready = b'RLM-AGENT-READY port=0 pid=%d carrier=stdio framing=binary\\n' % os.getpid()\n"
    )
    return spawn([sys.executable, "-c", prelude + script])


@contextlib.contextmanager
def fake_relay(script: str) -> Iterator[tuple[StdioRelay, subprocess.Popen[bytes]]]:
    process = fake_agent(script)
    assert process.stdin is not None and process.stdout is not None
    relay = StdioRelay(pipe_stream(process.stdin, process.stdout, process.kill))
    try:
        relay.hand_secrets(json.dumps({"token": "t"}))
        yield relay, process
    finally:
        relay.close()
        kill_group(process)


def _echo(request: pb.SubcallRequest) -> str:
    time.sleep(0.05)  # long enough for the calls to overlap
    return f"pong:{codec.loads(request.prompts[0])}"


# -- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["binary", "base64"])
def test_frames_survive_any_split(framing: str) -> None:
    frames = [
        Frame(OPEN, 1),
        Frame(DATA, 1, bytes(range(256)) * 40),
        Frame(DATA, 7, b""),
        Frame(CLOSE, 1, b"bye"),
    ]
    wire = encode_frames(frames[:2], framing) + encode_frames(frames[2:], framing)
    rng = random.Random(1)
    for _ in range(30):
        decoder = FrameDecoder(framing)
        got: list[Frame] = []
        position = 0
        while position < len(wire):
            step = rng.randint(1, 300)
            piece = wire[position : position + step]
            position += step
            got += decoder.feed(piece.decode("ascii") if framing == "base64" else piece)
        assert got == frames
        assert decoder.pending == 0
    if framing == "base64":  # a terminal's \r\n is fine
        assert FrameDecoder("base64").feed(wire.replace(b"\n", b"\r\n")) == frames


@pytest.mark.parametrize(
    ("framing", "bad", "shown"),
    [
        ("binary", b"Welcome to the sandbox\n", "Welcome"),
        ("binary", bytes([MAGIC, 9, 0, 0, 0, 1, 0, 0, 0, 0]), "xa7"),
        ("binary", bytes([MAGIC, DATA, 0, 0, 0, 1, 0x7F, 0, 0, 0]), "bytes (at most"),
        ("binary", bytes([MAGIC, DATA, 0, 0, 0, 0, 0, 0, 0, 0]), "stream 0"),
        ("base64", b"not base64!\n", "not base64"),
        ("base64", "caf\u00e9\n", "non-ASCII"),
        ("base64", "\ufffd\ufffd\n", "non-ASCII"),
        ("base64", b"\n", "empty line"),
    ],
)
def test_anything_but_frames_is_a_clear_error(framing: str, bad: bytes | str, shown: str) -> None:
    with pytest.raises(FramingError) as info:
        FrameDecoder(framing).feed(bad)
    assert shown in str(info.value)


def test_binary_framing_refuses_text() -> None:
    with pytest.raises(FramingError, match="base64"):
        FrameDecoder("binary").feed("text")


def test_proof_is_an_hmac_of_the_token() -> None:
    import hashlib
    import hmac

    line = reverse_proof("secret-token")
    expected = hmac.new(b"secret-token", b"rlm-reverse", hashlib.sha256).hexdigest()
    assert line == f"RLM-REVERSE {expected}\n"
    assert "secret-token" not in line


@pytest.mark.timeout(60)
def test_backpressure_bounds_what_is_queued() -> None:
    """While the pipe does not take bytes, a local sender is held up after a bounded amount;
    once it does, every byte arrives, in order, in a few large sends."""
    gate = threading.Event()
    received = bytearray()
    sends: list[int] = []

    def send(data: bytes) -> None:
        gate.wait()
        sends.append(len(data))
        received.extend(data)

    mux = Multiplexer(send, max_batch=1 * MiB, max_queued=1 * MiB)
    mux.start()
    ours, theirs = socket.socketpair()
    mux.open_stream(theirs)
    payload = random.Random(3).randbytes(24 * MiB)
    written = [0]

    def produce() -> None:
        view = memoryview(payload)
        with contextlib.suppress(OSError):
            while written[0] < len(view):
                written[0] += ours.send(view[written[0] : written[0] + 65536])

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    last = -1
    while written[0] != last:  # until the producer is held up
        last = written[0]
        time.sleep(0.3)
    assert written[0] < 8 * MiB, "the relay queued without bound"
    gate.set()
    producer.join(30)
    assert written[0] == len(payload)
    ours.close()  # the stream ends: its CLOSE frame follows the data
    frames: list[Frame] = []
    while not frames or frames[-1].kind != CLOSE:
        time.sleep(0.05)
        frames = FrameDecoder().feed(bytes(received))
    assert frames[0].kind == OPEN
    assert b"".join(f.payload for f in frames if f.kind == DATA) == payload
    assert max(sends) <= 1 * MiB
    mux.close()
    mux.join()


# -- stdio: a whole session ------------------------------------------------------------------


@needs_proc
@pytest.mark.timeout(90)
@pytest.mark.parametrize("framing", ["binary", "base64"])
def test_stdio_session(framing: str) -> None:
    """Handshake, cells, concurrent sub-calls, a 50 MiB context, a reconnect, and a clean
    end: no process, socket, directory or thread left behind."""
    wrap = StrChunks if framing == "base64" else None  # base64 as a text-decoding SDK
    with stdio_agent(framing, wrap=wrap) as agent:
        client = agent.client(subcalls=_echo)
        assert execute(client, "print(1 + 1)").stdout == "2\n"
        code = (
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(8) as pool:\n"
            "    print(list(pool.map(lambda i: llm_query(f'q{i}'), range(16))))"
        )
        result = execute(client, code)
        assert result.error == "", result.stderr
        assert result.stdout == str([f"pong:q{i}" for i in range(16)]) + "\n"

        size = 50 * MiB
        started = time.perf_counter()
        loaded = load_context(client, "x" * size)
        seconds = time.perf_counter() - started
        print(f"\n50 MiB context over stdio/{framing}: {size / seconds / 1e6:.0f} MB/s")
        assert loaded.length == size
        assert execute(client, "print(len(context), context[-3:])").stdout == f"{size} xxx\n"
        assert execute(client, "x = 41").error == ""

        # The channel goes away; a new one opens a new stream over the same pipe.
        client.close(send_close=False)
        again = agent.client()
        assert execute(again, "print(x + 1)").stdout == "42\n"
        assert agent.relay.error is None
        relay_dir = agent.relay.socket_dir
        assert relay_dir is not None and os.path.isdir(relay_dir)
        assert oct(os.stat(relay_dir).st_mode & 0o777) == "0o700"
        assert sorted(os.listdir(agent.agent_tmp))[0].startswith("rlm-agent-")
        again.close()  # Close: the agent ends the session
        assert agent.process.wait(20) == 0
        assert os.listdir(agent.agent_tmp) == []  # it removed its private socket directory
        pgid = agent.process.pid
    assert not os.path.exists(relay_dir)
    assert not group_alive(pgid)
    assert relay_threads() == []


@pytest.mark.timeout(60)
def test_banner_before_the_ready_line_is_kept_not_fatal() -> None:
    banner = "printf 'Welcome to the sandbox\\n\\377 junk \\n'; echo 'motd: be nice'; exec \"$@\""
    prefix = ["sh", "-c", banner, "sh"]
    with stdio_agent(prefix=prefix) as agent:
        assert agent.relay.preamble == ["Welcome to the sandbox", "\ufffd junk ", "motd: be nice"]
        assert execute(agent.client(), "print('ok')").stdout == "ok\n"


@needs_proc
@pytest.mark.timeout(60)
def test_a_hostile_cell_cannot_reach_the_carrier() -> None:
    with stdio_agent() as agent:
        client = agent.client()
        assert agent.process.stdin is not None and agent.process.stdout is not None
        carrier = {
            f"pipe:[{os.fstat(agent.process.stdin.fileno()).st_ino}]",
            f"pipe:[{os.fstat(agent.process.stdout.fileno()).st_ino}]",
        }
        probe = (
            "import os, subprocess, sys\n"
            "print(os.readlink('/proc/self/fd/0'), os.readlink('/proc/self/fd/1') == os.readlink('/proc/self/fd/2'))\n"
            "child = subprocess.run([sys.executable, '-c', 'import os\\n"
            'for fd in os.listdir("/proc/self/fd"):\\n'
            '    try: print(os.readlink("/proc/self/fd/" + fd))\\n'
            "    except OSError: pass'], capture_output=True, close_fds=False, text=True)\n"
            "print(child.stdout.split())"
        )
        result = execute(client, probe)
        assert result.error == "", result.stderr
        first, inherited = result.stdout.splitlines()
        assert first == "/dev/null True"  # fd 0 reads nothing, fd 1 writes to stderr
        assert not carrier & set(eval(inherited)), "a child inherited the carrier"

        forged = bytes([MAGIC, DATA, 0, 0, 0, 1, 0, 0, 0, 4]) + b"evil"
        hostile = (
            "import os, subprocess, sys\n"
            f"os.write(1, b'\\x00garbage\\xff' + {forged!r})\n"
            "os.write(2, b'\\x00more garbage\\xff\\n')\n"
            "subprocess.run([sys.executable, '-c', 'print(\"child says hi\")'])\n"
            "os.close(1)\n"
            "os.close(2)\n"
            "print('printed after closing')"
        )
        result = execute(client, hostile)
        assert result.error == "", result.stderr
        assert execute(client, "print('still here')").stdout == "still here\n"
        # A new connection after the cell closed fds 1 and 2 works too.
        client.close(send_close=False)
        assert execute(agent.client(), "print('again')").stdout == "again\n"
        assert agent.relay.error is None
    diagnostics = agent.stderr.text(wait=10)
    assert "garbage" in diagnostics and "child says hi" in diagnostics


@needs_proc
@pytest.mark.timeout(60)
def test_stdio_under_the_supervisor() -> None:
    """With ``--die-with-parent`` the supervisor forks first; the agent (its child) claims
    the carrier, and everything ends when the host closes it."""
    with stdio_agent(extra=["--die-with-parent", str(os.getpid())]) as agent:
        client = agent.client()
        info = handshake(client)
        assert info.pid != agent.process.pid  # the supervisor's child serves
        assert agent.relay.pid == info.pid
        result = execute(client, "import os\nprint(os.readlink('/proc/self/fd/0'))")
        assert result.stdout == "/dev/null\n"
        client.close(send_close=False)
        agent.relay.close()  # the carrier ends: the agent, then the supervisor, exit
        assert agent.process.wait(20) == 0
        pgid = agent.process.pid
    assert not group_alive(pgid)


# -- stdio: failures ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_garbage_on_the_carrier_fails_fast_with_the_bytes_shown() -> None:
    script = (
        "os.write(1, b'a banner line\\n' + ready)\n"
        "os.read(0, 65536)\n"  # the host's first frames
        "os.write(1, b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n')\n"
        "time.sleep(60)\n"
    )
    with fake_relay(script) as (relay, _):
        assert relay.wait_ready(time.monotonic() + 30) > 0
        assert relay.preamble == ["a banner line"]
        client = AgentClient(Endpoint(relay.start(), "t"))
        try:
            with pytest.raises(grpc.RpcError) as info:
                handshake(client)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert relay.error is not None
            assert "corrupt" in relay.error and "HTTP/1.1 400" in relay.error
            with pytest.raises(grpc.RpcError) as info:  # and every later call, at once
                handshake(client)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            client.close(timeout=1, send_close=False)


@pytest.mark.timeout(60)
def test_a_carrier_that_ends_mid_session_fails_fast() -> None:
    script = (
        "os.write(1, ready)\n"
        "os.read(0, 65536)\n"
        "os.write(1, bytes([0xA7, 2, 0, 0, 0, 1]))\n"  # half a frame header, then gone
        "sys.exit(3)\n"
    )
    with fake_relay(script) as (relay, _):
        relay.wait_ready(time.monotonic() + 30)
        client = AgentClient(Endpoint(relay.start(), "t"))
        try:
            with pytest.raises(grpc.RpcError) as info:
                handshake(client)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert relay.error is not None
            assert "ended" in relay.error and "middle of a frame" in relay.error
        finally:
            client.close(timeout=1, send_close=False)


@pytest.mark.timeout(60)
def test_output_that_ends_before_the_ready_line_is_reported() -> None:
    with fake_relay("os.write(1, b'bash: python: command not found\\n')\n") as (relay, _):
        with pytest.raises(SandboxError, match="ended before its ready line") as info:
            relay.wait_ready(time.monotonic() + 30)
        assert "python: command not found" in str(info.value)


@pytest.mark.timeout(60)
def test_no_ready_line_by_the_deadline() -> None:
    with fake_relay("os.write(1, b'still booting\\n')\ntime.sleep(60)\n") as (relay, _):
        with pytest.raises(SandboxError, match="in time") as info:
            relay.wait_ready(time.monotonic() + 1.0)
        assert "still booting" in str(info.value)


@pytest.mark.timeout(60)
def test_a_framing_mismatch_is_named() -> None:
    script = "os.write(1, ready.replace(b'binary', b'base64'))\ntime.sleep(60)\n"
    with fake_relay(script) as (relay, _), pytest.raises(SandboxError, match="framing=base64"):
        relay.wait_ready(time.monotonic() + 30)


@pytest.mark.timeout(60)
def test_the_agent_dies_mid_session() -> None:
    with stdio_agent() as agent:
        client = agent.client()
        assert execute(client, "print(1)").stdout == "1\n"
        os.killpg(agent.process.pid, signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as info:
            execute(client, "print(2)")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert agent.relay.error is not None and "ended" in agent.relay.error


@pytest.mark.timeout(60)
def test_the_agent_ends_on_garbage_from_the_host() -> None:
    with stdio_agent() as agent:
        assert execute(agent.client(), "print(1)").stdout == "1\n"
        agent.relay.stream.send(b"\x00this is not a frame")
        assert agent.process.wait(20) == 0
        diagnostics = agent.stderr.text(wait=10)
        assert "carrier is corrupt" in diagnostics and "this is not" in diagnostics


@pytest.mark.timeout(60)
def test_writes_are_coalesced() -> None:
    """A 10 MiB transfer takes far fewer sends than it has HTTP/2 frames (640 of 16 KiB)."""
    counting: list[CountingStream] = []

    def wrap(process: subprocess.Popen[bytes]) -> ByteStream:
        assert process.stdin is not None and process.stdout is not None
        counting.append(CountingStream(pipe_stream(process.stdin, process.stdout)))
        return counting[0]

    with stdio_agent(wrap=wrap) as agent:
        client = agent.client()
        stream = counting[0]
        before_sends, before_bytes = stream.sends, stream.sent
        assert load_context(client, b"\x01" * (10 * MiB)).length == 10 * MiB
        sends = stream.sends - before_sends
        assert stream.sent - before_bytes >= 10 * MiB
        assert sends < 200, f"{sends} sends for 10 MiB"


# -- reverse ----------------------------------------------------------------------------------


@contextlib.contextmanager
def dialing_agent(
    address: tuple[str, int], token: str, extra: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    agent_tmp = tempfile.mkdtemp(prefix="rlm-t-")
    argv = [*AGENT, "--dial", f"{address[0]}:{address[1]}", "--secrets-stdin", *(extra or [])]
    process = spawn(argv, agent_tmp)
    assert process.stdin is not None
    process.stdin.write(json.dumps({"token": token}).encode() + b"\n")
    process.stdin.close()
    try:
        yield process
    finally:
        kill_group(process)
        import shutil

        shutil.rmtree(agent_tmp, ignore_errors=True)


@pytest.mark.timeout(60)
def test_reverse_pairs_the_right_proof_and_drops_the_others() -> None:
    token = new_token()
    listener = ReverseListener(proof_timeout=2.0)
    listener.expect(token)
    wrong = socket.create_connection(listener.address)
    wrong.sendall(reverse_proof("another-token").encode())
    silent = socket.create_connection(listener.address)  # never sends a proof
    try:
        with dialing_agent(listener.address, token) as process:
            relay = listener.accept(time.monotonic() + 30)
            try:
                # Only one connection is paired: a second one, even with the right
                # proof, is refused or dropped.
                try:
                    with socket.create_connection(listener.address, timeout=20) as late:
                        late.sendall(reverse_proof(token).encode())
                        assert late.recv(1) == b""
                except ConnectionError:
                    pass
                client = AgentClient(Endpoint(relay.start(), token))
                client.wait_ready(20)
                assert handshake(client, timeout=20).pid == relay.pid
                assert execute(client, "print('over the reverse carrier')").stdout == (
                    "over the reverse carrier\n"
                )
                assert load_context(client, "y" * (5 * MiB)).length == 5 * MiB
                assert process.stdout is not None
                assert process.stdout.readline().startswith(b"RLM-AGENT-READY port=0 pid=")

                # The agent's connection breaks: a clear error, at once.
                os.killpg(process.pid, signal.SIGKILL)
                with pytest.raises(grpc.RpcError) as info:
                    execute(client, "print(2)")
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert relay.error is not None and "reverse carrier" in relay.error
                client.close(timeout=1, send_close=False)
            finally:
                relay.close()
        for sock in (wrong, silent):
            sock.settimeout(20)
            assert sock.recv(1) == b""  # dropped by the listener
        assert any("wrong proof" in why for why in listener.rejected)
        assert any("no proof within" in why for why in listener.rejected)
    finally:
        wrong.close()
        silent.close()
        listener.close()
    assert relay_threads() == []


@pytest.mark.timeout(60)
def test_reverse_agent_sends_only_the_proof_and_ends_with_its_connection() -> None:
    token = new_token()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    shared = tempfile.mkdtemp(prefix="rlm-t-")
    try:
        with dialing_agent(server.getsockname(), token, ["--shared-dir", shared]) as process:
            conn, _ = server.accept()
            # The private socket sits in the shared directory, which launchers remove
            # even when they have to kill the agent.
            assert [n for n in os.listdir(shared) if n.startswith("rlm-agent-")]
            with conn:
                conn.settimeout(30)
                received = b""
                while received.count(b"\n") < 2:
                    received += conn.recv(4096)
                proof, ready = received.split(b"\n")[:2]
                assert proof.decode() + "\n" == reverse_proof(token)
                assert token.encode() not in received
                assert ready.startswith(b"RLM-AGENT-READY port=0 pid=")
                assert b"carrier=reverse framing=binary" in ready
            assert process.wait(20) == 0  # its carrier ended: the agent shut down
            assert not os.path.exists(shared)  # removed with everything in it
    finally:
        server.close()
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.timeout(60)
def test_reverse_accept_times_out_with_the_drops_listed() -> None:
    listener = ReverseListener(proof_timeout=1.0)
    listener.expect("token")
    try:
        with socket.create_connection(listener.address) as bad:
            bad.sendall(b"GET / HTTP/1.1\r\n")
            with pytest.raises(SandboxError, match="no agent connected") as info:
                listener.accept(time.monotonic() + 2.0)
            assert "no proof" in str(info.value)
    finally:
        listener.close()


def test_a_new_stream_is_announced_with_its_first_bytes_in_one_write() -> None:
    # A carrier that pays a round trip per write (an exec's stdin) pays one for both.
    batches: list[list[Frame]] = []
    mux = Multiplexer(lambda data: batches.append(FrameDecoder("binary").feed(data)))
    mux.start()
    quiet, quiet_peer = socket.socketpair()
    chatty, chatty_peer = socket.socketpair()
    try:
        assert mux.open_stream(quiet_peer) and mux.open_stream(chatty_peer)
        quiet.close()  # a connection that never said anything costs nothing on the pipe
        chatty.sendall(b"PRI * HTTP/2.0")
        deadline = time.monotonic() + 30
        while not batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batches[0] == [Frame(OPEN, 1), Frame(DATA, 1, b"PRI * HTTP/2.0")]
        time.sleep(0.2)
        assert [f for batch in batches for f in batch if f.kind != DATA] == [Frame(OPEN, 1)]
    finally:
        chatty.close()
        mux.close()
        mux.join()
