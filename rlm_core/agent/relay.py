"""The agent's end of a relay carrier (standard library only).

With ``--stdio`` the agent serves gRPC on a private Unix socket and relays between that
socket and its stdin/stdout; with ``--dial HOST:PORT`` it relays over one TCP connection it
dials out to the host's listener. Either way each ``OPEN`` frame from the host becomes a
fresh connection to the agent's own socket (see :class:`rlm_core.agent.framing.Multiplexer`).

On the ``stdio`` carrier, cell output must never reach the pipe: :func:`claim_stdio` moves
the carrier to private close-on-exec descriptors and points fd 0 at ``/dev/null`` and fd 1
at fd 2 (the launcher collects fd 2 as diagnostics). A cell that writes to fd 1, closes it,
or starts a child that prints, reaches stderr or nothing, never the carrier.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable

from rlm_core.agent.framing import Multiplexer, reverse_proof, tune_tcp

DIAL_TIMEOUT = 30.0
"""Seconds the agent keeps trying to reach the host's reverse listener."""

READ_BYTES = 1 << 20
"""Bytes read from the carrier at a time."""

_stderr_copy: int | None = None
"""A private copy of the agent's stderr, to put back on fds 1 and 2 if a cell closes them."""

Pipe = int | socket.socket


def claim_stdio() -> tuple[int, int]:
    """Take stdin/stdout for the carrier; returns ``(carrier_in, carrier_out)``.

    Call it before anything else in the process that serves. The carrier descriptors are
    private duplicates, close-on-exec (children never inherit them); afterwards fd 0 reads
    ``/dev/null`` and fd 1 writes where fd 2 does, so nothing written to fd 1 (by a cell,
    a child process or a stray ``print``) can reach the carrier.
    """
    global _stderr_copy
    _ensure_open(2, os.O_WRONLY)  # so that the copies below never land on fds 0-2
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    carrier_in = os.dup(0)  # os.dup: non-inheritable, so close-on-exec
    carrier_out = os.dup(1)
    _stderr_copy = os.dup(2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return carrier_in, carrier_out


def _ensure_open(fd: int, flags: int) -> None:
    """Open ``/dev/null`` on ``fd`` if it is closed."""
    try:
        os.fstat(fd)
    except OSError:
        spare = os.open(os.devnull, flags)
        if spare != fd:
            os.dup2(spare, fd)
            os.close(spare)


def _refill_std_fds() -> None:
    """Reopen fds 0-2 if a cell closed them, before the relay creates a socket: otherwise
    the socket (or the one the gRPC server accepts) could take fd 1 or 2, and the next
    write to stdout or stderr would land in a gRPC connection."""
    _ensure_open(0, os.O_RDONLY)
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            if _stderr_copy is not None:
                os.dup2(_stderr_copy, fd)
            else:
                _ensure_open(fd, os.O_WRONLY)


def read_line(fd: int, limit: int = 1 << 20) -> str:
    """Read one line from ``fd`` unbuffered, a byte at a time, so that not a byte after
    the newline is consumed; returns ``""`` at once on end of file."""
    data = bytearray()
    while len(data) < limit:
        byte = _read(fd, 1)
        if not byte:
            break
        data += byte
        if byte == b"\n":
            break
    else:
        raise ValueError(f"no newline in the first {limit} bytes of fd {fd}")
    return data.decode("utf-8")


def _read(fd: int, size: int) -> bytes:
    """``os.read``, waiting when ``fd`` happens to be non-blocking."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            select.select([fd], [], [])


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (partial writes and non-blocking fds included)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


def dial_host(address: str, token: str, timeout: float) -> socket.socket:
    """Connect to the host's reverse listener at ``HOST:PORT`` (retrying until ``timeout``
    s have passed) and send the proof line; raises ``OSError`` when it cannot."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OSError(f"--dial needs HOST:PORT, not {address!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            sock = socket.create_connection((host, int(port)), timeout=max(0.5, remaining))
            break
        except OSError as exc:
            if remaining <= 0:
                raise OSError(f"cannot reach the host at {address}: {exc}") from exc
            time.sleep(min(0.25, max(0.0, remaining)))
    try:
        tune_tcp(sock)
        sock.settimeout(None)
        sock.sendall(reverse_proof(token).encode())
    except OSError:
        sock.close()
        raise
    return sock


class AgentRelay:
    """Relays the host's streams to the agent's gRPC socket at ``server_path``.

    ``pipe_in``/``pipe_out`` are the carrier: file descriptors (``--stdio``) or one socket
    (``--dial``). ``on_end`` is called once, from a relay thread, with the reason when the
    carrier ends or carries anything but frames.
    """

    def __init__(
        self,
        pipe_in: Pipe,
        pipe_out: Pipe,
        server_path: str,
        framing: str,
        on_end: Callable[[str], None],
    ) -> None:
        self.server_path = server_path
        self._pipe_in = pipe_in
        self._pipe_out = pipe_out
        send: Callable[[bytes], None]
        if isinstance(pipe_out, socket.socket):
            send = pipe_out.sendall
        else:
            fd = pipe_out

            def send(data: bytes) -> None:
                write_all(fd, data)

        self._mux = Multiplexer(send, framing, name="agent", on_open=self._connect, on_end=on_end)
        self._reader: threading.Thread | None = None

    @property
    def error(self) -> str | None:
        """Why the carrier failed, if it did."""
        return self._mux.error

    def _connect(self, stream_id: int) -> socket.socket:
        _refill_std_fds()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.server_path)
        except OSError:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        """Start relaying (daemon threads)."""
        self._mux.start()
        self._reader = threading.Thread(
            target=self._read_pipe, name="rlm-relay-agent-carrier", daemon=True
        )
        self._reader.start()

    def _read_pipe(self) -> None:
        pipe = self._pipe_in
        try:
            while self._mux.alive:
                if isinstance(pipe, socket.socket):
                    chunk = pipe.recv(READ_BYTES)
                else:
                    chunk = _read(pipe, READ_BYTES)
                if not chunk:
                    self._mux.ended("the host closed the carrier")
                    return
                self._mux.feed(chunk)
        except OSError as exc:
            self._mux.fail(f"reading the carrier failed: {type(exc).__name__}: {exc}")

    def close(self, drain: float = 1.0) -> None:
        """Stop relaying; with ``drain`` > 0 first let the streams end and flush (up to
        ``drain`` s), so that the answer to the host's ``Close`` reaches it.

        A carrier socket is closed; carrier descriptors are left to the process's exit (a
        relay thread may still be blocked reading one, and a closed number could be reused).
        """
        self._mux.close(drain)
        if isinstance(self._pipe_in, socket.socket):
            with contextlib.suppress(OSError):
                self._pipe_in.shutdown(socket.SHUT_RDWR)
        self._mux.join(1.0)
        if self._reader is not None and isinstance(self._pipe_in, socket.socket):
            self._reader.join(1.0)
        for pipe in {self._pipe_in, self._pipe_out}:
            if isinstance(pipe, socket.socket):
                pipe.close()


def open_carrier(
    *,
    stdio: tuple[int, int] | None,
    dial: str | None,
    token: str,
    server_path: str,
    framing: str,
    ready_line: str,
    on_end: Callable[[str], None],
) -> AgentRelay:
    """Start the relay for ``--stdio`` (``stdio`` = the claimed descriptors) or ``--dial``:
    the ready line goes first on the carrier (after the proof, for ``--dial``), then frames."""
    line = (ready_line.rstrip("\n") + "\n").encode()
    if stdio is not None:
        carrier_in, carrier_out = stdio
        write_all(carrier_out, line)
        relay = AgentRelay(carrier_in, carrier_out, server_path, framing, on_end)
    elif dial is not None:
        sock = dial_host(dial, token, DIAL_TIMEOUT)
        try:
            sock.sendall(line)
        except OSError:
            sock.close()
            raise
        relay = AgentRelay(sock, sock, server_path, framing, on_end)
    else:
        raise ValueError("open_carrier needs stdio descriptors or a dial address")
    relay.start()
    return relay
