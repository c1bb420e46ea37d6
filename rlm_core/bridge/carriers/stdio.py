"""The host's end of a relay carrier: gRPC over a byte pipe to an agent.

The launcher starts ``python -m rlm_core.agent --stdio --secrets-stdin`` in the sandbox and
hands over a :class:`ByteStream` (the process's stdin and stdout). :class:`StdioRelay`
writes the secrets line, reads the agent's output up to its ready line (lines before it,
such as a login shell's banner, are kept as :attr:`StdioRelay.preamble`), then serves a
private Unix socket as the gRPC channel's target: each connection the channel opens there
becomes one stream of frames over the pipe (see :mod:`rlm_core.agent.framing`).

Writes are coalesced: one :meth:`ByteStream.send` carries everything queued (up to
:data:`~rlm_core.agent.framing.MAX_BATCH`), since an exec's stdin may cost one network round
trip per write; while more than :data:`~rlm_core.agent.framing.MAX_QUEUED` waits, the local
readers wait too. If the pipe ends or carries anything but frames, every local connection
is closed at once (gRPC fails fast with ``UNAVAILABLE``) and :attr:`StdioRelay.error` says why.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from rlm_core.agent.framing import FRAMINGS, Multiplexer
from rlm_core.exceptions import SandboxError

READY_LINE = re.compile(
    r"RLM-AGENT-READY port=\d+ pid=(?P<pid>\d+)"
    r"(?: carrier=(?P<carrier>\S+))?(?: framing=(?P<framing>\S+))?\s*$"
)
"""The agent's ready line on a relay carrier."""

MAX_PREAMBLE_LINES = 200
"""Lines kept from before the ready line (the last ones)."""
MAX_PREAMBLE_LINE = 2000
"""Characters kept of each such line."""
_MAX_PARTIAL_LINE = 64 * 1024  # a longer unfinished line is kept as a line of its own
READ_BYTES = 1 << 20
"""Bytes read from a pipe at a time."""


class ByteStream(Protocol):
    """The agent process's stdin and stdout, as a launcher hands them over."""

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (blocking; may cost a network round trip)."""
        ...

    def __iter__(self) -> Iterator[bytes | str]:
        """The agent's stdout in chunks, until it ends. Raising ends it with that error."""
        ...

    def close(self) -> None:
        """Stop: the iteration ends soon after (e.g. the process is gone)."""
        ...


class CarrierClosed(ConnectionError):
    """Raised by a stream's iteration when the carrier ended with a reason to report."""


class PushStream:
    """A :class:`ByteStream` for SDKs that deliver stdout through callbacks.

    The SDK's output callback calls :meth:`push` with each chunk (bytes or decoded text)
    and :meth:`end` when the process or connection ends; ``send`` writes to the process's
    stdin and ``close`` (optional) stops it. Pushing never blocks the SDK's thread.
    """

    _END = object()

    def __init__(
        self, send: Callable[[bytes], None], close: Callable[[], None] | None = None
    ) -> None:
        self._send = send
        self._close = close
        self._chunks: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = threading.Event()
        self._reason: str | None = None

    def push(self, chunk: bytes | str) -> None:
        """Hand over a chunk of the agent's stdout (ignored once ended)."""
        if chunk and not self._ended.is_set():
            self._chunks.put(chunk)

    def end(self, reason: str | None = None) -> None:
        """The agent's stdout ended; ``reason`` (e.g. ``"exit code 1"``) is reported."""
        if not self._ended.is_set():
            self._reason = reason
            self._ended.set()
            self._chunks.put(self._END)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin."""
        self._send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """The pushed chunks until :meth:`end`; then :class:`CarrierClosed` if a reason
        was given."""
        while True:
            chunk = self._chunks.get()
            if chunk is self._END:
                if self._reason:
                    raise CarrierClosed(self._reason)
                return
            assert isinstance(chunk, bytes | str)
            yield chunk

    def close(self) -> None:
        """Stop the process (the ``close`` given) and end the stream."""
        try:
            if self._close is not None:
                self._close()
        finally:
            self.end()


class _PipeStream:
    """A :class:`ByteStream` over a Popen-like process's pipes."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, close: Callable[[], None] | None) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._close = close

    def send(self, data: bytes) -> None:
        self._stdin.write(data)
        self._stdin.flush()

    def __iter__(self) -> Iterator[bytes | str]:
        read1 = getattr(self._stdout, "read1", None)
        try:
            while True:
                chunk = read1(READ_BYTES) if read1 is not None else self._read_raw()
                if not chunk:
                    return
                yield chunk
        finally:
            with contextlib.suppress(OSError, ValueError):
                self._stdout.close()

    def _read_raw(self) -> bytes:
        return os.read(self._stdout.fileno(), READ_BYTES)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        if self._close is not None:
            self._close()


def pipe_stream(
    stdin: BinaryIO, stdout: BinaryIO, close: Callable[[], None] | None = None
) -> ByteStream:
    """A :class:`ByteStream` over a process's binary ``stdin`` and ``stdout`` (e.g. a
    ``subprocess.Popen`` with pipes); ``close`` stops the process (its stdin is closed in
    any case, which ends the agent)."""
    return _PipeStream(stdin, stdout, close)


def private_socket_dir() -> str:
    """A new private (0700) directory for a Unix socket, with a short path (socket paths
    are limited to about 100 bytes)."""
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="rlm-relay-", dir=base)


class StdioRelay:
    """Relays gRPC connections to an agent over ``stream`` (its stdin and stdout).

    Call :meth:`hand_secrets`, :meth:`wait_ready`, then :meth:`start` for the gRPC target.
    ``carrier`` is the name the agent's ready line must carry (``"reverse"`` when the
    stream is a reverse connection).
    """

    def __init__(self, stream: ByteStream, framing: str = "binary", *, carrier: str = "stdio"):
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r} (expected one of {', '.join(FRAMINGS)})")
        self.stream = stream
        self.framing = framing
        self.carrier = carrier
        self.preamble: list[str] = []
        """Lines the agent's process wrote before its ready line (for diagnostics)."""
        self.pid: int | None = None
        """The agent's process id, from its ready line."""
        self._mux = Multiplexer(self._send, framing, name="host", on_end=self._ended)
        self._partial = bytearray()
        self._settled = threading.Event()  # ready, or the stream ended first
        self._drained = threading.Event()  # the agent's output is read to its end
        self._refusal: str | None = None  # why the ready line is unacceptable
        self._pump: threading.Thread | None = None
        self._acceptor: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._directory: str | None = None
        self._path: str | None = None
        self._closed = False

    @property
    def error(self) -> str | None:
        """Why the carrier stopped carrying bytes (``None`` while it works)."""
        return self._mux.error

    @property
    def socket_dir(self) -> str | None:
        """The private directory of the local socket (removed on :meth:`close`)."""
        return self._directory

    # -- start-up ---------------------------------------------------------------------------

    def hand_secrets(self, secrets_json: str) -> None:
        """Write the secrets line (the agent reads it with ``--secrets-stdin``) first."""
        line = secrets_json.strip()
        if "\n" in line or "\r" in line:
            raise ValueError("the secrets must be one line of JSON")
        self.stream.send((line + "\n").encode())

    def wait_ready(self, deadline: float) -> int:
        """Read the agent's output until its ready line; returns the agent's pid. Raises
        :class:`SandboxError` (with what came before) if the output ends first or the
        ``deadline`` (a :func:`time.monotonic` time) passes."""
        if self._pump is None:
            self._pump = threading.Thread(
                target=self._read_stream, name="rlm-relay-host-carrier", daemon=True
            )
            self._pump.start()
        self._settled.wait(max(0.0, deadline - time.monotonic()))
        if self.pid is not None and self._refusal is None:
            return self.pid
        if self._refusal is not None:
            problem = self._refusal
        elif self._settled.is_set():
            problem = f"the agent's output ended before its ready line ({self.error})"
        else:
            problem = f"the agent did not report ready on its {self.carrier} carrier in time"
        raise SandboxError(problem + self._preamble_text())

    def _send(self, data: bytes) -> None:
        try:
            self.stream.send(data)
        except Exception:
            # The agent's end is probably gone: the end of its output, which the reader
            # is about to see, is the clearer reason to report.
            self._drained.wait(1.0)
            raise

    def _preamble_text(self) -> str:
        if not self.preamble:
            return " (it wrote nothing before)"
        return "\nits output before that:\n" + "\n".join(self.preamble)

    def _read_stream(self) -> None:
        reason = f"the agent's {self.carrier} carrier ended (end of its output)"
        try:
            for chunk in self.stream:
                if self._settled.is_set():
                    self._mux.feed(chunk)
                else:
                    self._scan(chunk)
                if not self._mux.alive:
                    return
        except CarrierClosed as exc:
            reason = f"the agent's {self.carrier} carrier ended: {exc}"
        except Exception as exc:
            reason = (
                f"reading the agent's {self.carrier} carrier failed: {type(exc).__name__}: {exc}"
            )
        else:
            self._mux.ended(reason)
        finally:
            self._mux.fail(reason)  # no-op if it already failed or was closed
            self._settled.set()
            self._drained.set()

    def _scan(self, chunk: bytes | str) -> None:
        """Before the ready line: collect lines until it comes, then relay the rest."""
        data = chunk.encode("utf-8", "surrogateescape") if isinstance(chunk, str) else chunk
        self._partial += data
        while True:
            end = self._partial.find(b"\n")
            if end < 0:
                if len(self._partial) > _MAX_PARTIAL_LINE:
                    self._keep(bytes(self._partial))
                    self._partial.clear()
                return
            line = bytes(self._partial[:end])
            del self._partial[: end + 1]
            text = line.decode("utf-8", "replace").rstrip("\r")
            match = READY_LINE.match(text)
            if match is None:
                self._keep(line)
                continue
            self._check_ready(match)
            rest = bytes(self._partial)
            self._partial.clear()
            self._settled.set()
            if rest and self._refusal is None:
                self._mux.feed(rest)
            return

    def _check_ready(self, match: re.Match[str]) -> None:
        self.pid = int(match["pid"])
        carrier, framing = match["carrier"], match["framing"]
        if carrier != self.carrier or framing != self.framing:
            self._refusal = (
                f"the agent reports carrier={carrier} framing={framing}; the host expected "
                f"carrier={self.carrier} framing={self.framing} (is the agent started with "
                f"the matching --stdio/--dial and --framing?)"
            )
            self._mux.fail(self._refusal)

    def _keep(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if len(text) > MAX_PREAMBLE_LINE:
            text = text[:MAX_PREAMBLE_LINE] + "..."
        self.preamble.append(text)
        del self.preamble[:-MAX_PREAMBLE_LINES]

    def start(self) -> str:
        """Start relaying; returns the gRPC target (``unix:/...``) to dial."""
        if self.pid is None:
            raise RuntimeError("StdioRelay.start() before wait_ready() succeeded")
        if self._listener is not None:
            return f"unix:{self._path}"
        if self.error is not None:
            raise SandboxError(f"the {self.carrier} carrier failed: {self.error}")
        self._directory = private_socket_dir()
        self._path = os.path.join(self._directory, "grpc.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._path)
        listener.listen(64)
        listener.settimeout(0.25)  # the accept loop checks for close this often
        self._listener = listener
        self._mux.start()
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener,), name="rlm-relay-host-accept", daemon=True
        )
        self._acceptor.start()
        if not self._mux.alive:  # failed meanwhile: make the socket refuse at once
            self._ended(self.error or "")
        return f"unix:{self._path}"

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while not self._closed:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                self._mux.open_stream(conn)  # closes it when the relay is down
        finally:
            listener.close()

    def _ended(self, reason: str) -> None:
        """The pipe failed: new connections must fail at once (the socket goes away)."""
        path = self._path
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop relaying, stop the stream, end the threads and remove the socket."""
        if self._closed:
            return
        self._closed = True
        self._mux.close()
        self._ended("closed")
        with contextlib.suppress(Exception):
            self.stream.close()
        self._mux.join(2.0)
        for thread in (self._acceptor, self._pump):
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
