"""The host's listener for the ``reverse`` carrier: the agent dials out to it.

The agent (``--dial HOST:PORT``, reaching the listener through a tunnel) sends a proof line
first, ``RLM-REVERSE <hex HMAC-SHA256(key=token, msg=b"rlm-reverse")>``, then its ready
line and frames, exactly as on the ``stdio`` carrier: the relay is a
:class:`~rlm_core.bridge.carriers.stdio.StdioRelay` over the connection. The listener
compares proofs in constant time; a connection with a wrong or missing proof is dropped
(within ``proof_timeout`` seconds) without holding up the others, and the first one with
the right proof is paired; the listener then stops listening.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator

from rlm_core.agent.framing import REVERSE_PREFIX, reverse_proof, tune_tcp
from rlm_core.bridge.carriers.stdio import READ_BYTES, StdioRelay
from rlm_core.exceptions import SandboxError

MAX_PENDING = 32
"""Connections whose proof is awaited at once; more are dropped on arrival."""
_MAX_PROOF = len(reverse_proof("")) + 16


class SocketStream:
    """A :class:`~rlm_core.bridge.carriers.stdio.ByteStream` over a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        """Write all of ``data``."""
        self.sock.sendall(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """What the peer sends, until it closes the connection."""
        while True:
            try:
                chunk = self.sock.recv(READ_BYTES)
            except OSError as exc:
                raise ConnectionError(f"the connection broke: {exc}") from exc
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        """Shut the connection down (ends the iteration) and close it."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class ReverseListener:
    """A TCP listener an agent dials out to; pairs one connection that proves the token."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, proof_timeout: float = 5.0):
        self.proof_timeout = proof_timeout
        self._expected: bytes | None = None
        self._lock = threading.Lock()
        self._paired: socket.socket | None = None
        self._paired_event = threading.Event()
        self._closed = False
        self._checking: dict[socket.socket, threading.Thread] = {}  # awaiting their proof
        self.rejected: list[str] = []
        """Why each dropped connection was dropped (for diagnostics)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self._sock.settimeout(0.25)  # the accept loop checks for close this often
        bound = self._sock.getsockname()
        self._address = (str(bound[0]), int(bound[1]))
        self._thread = threading.Thread(
            target=self._accept_loop, name="rlm-relay-reverse-accept", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (expose this through the tunnel)."""
        return self._address

    def expect(self, token: str) -> None:
        """Accept the agent that proves ``token`` (call before the agent may connect)."""
        with self._lock:
            self._expected = reverse_proof(token).encode()

    def _accept_loop(self) -> None:
        try:
            while not self._closed and not self._paired_event.is_set():
                try:
                    conn, peer = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                thread = threading.Thread(
                    target=self._check, args=(conn, peer), name="rlm-relay-reverse-proof"
                )
                thread.daemon = True
                with self._lock:
                    crowded = len(self._checking) >= MAX_PENDING or self._closed
                    if not crowded:
                        self._checking[conn] = thread
                if crowded:
                    self._reject(conn, f"{peer}: too many connections awaiting their proof")
                    continue
                thread.start()
        finally:
            self._sock.close()

    def _check(self, conn: socket.socket, peer: object) -> None:
        try:
            line = self._read_proof(conn)
            with self._lock:
                expected = self._expected
                right = expected is not None and hmac.compare_digest(line, expected)
                if right and not self._paired_event.is_set() and not self._closed:
                    self._paired = conn
                    self._paired_event.set()
                    return
            if expected is None:
                why = "no agent is expected yet"
            elif right:
                why = "an agent is already paired"
            elif line.startswith(REVERSE_PREFIX.encode()):
                why = "wrong proof"
            else:
                why = f"no proof (it sent {line[:40]!r})"
            self._reject(conn, f"{peer}: {why}")
        except (OSError, ValueError) as exc:
            self._reject(conn, f"{peer}: {exc}")
        finally:
            with self._lock:
                self._checking.pop(conn, None)

    def _read_proof(self, conn: socket.socket) -> bytes:
        """The proof line, read byte by byte so nothing after it is consumed."""
        deadline = time.monotonic() + self.proof_timeout
        line = bytearray()
        while len(line) < _MAX_PROOF:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ValueError(f"no proof within {self.proof_timeout:g}s")
            conn.settimeout(remaining)
            try:
                byte = conn.recv(1)
            except TimeoutError:
                raise ValueError(f"no proof within {self.proof_timeout:g}s") from None
            if not byte:
                raise ValueError("closed before sending a proof")
            line += byte
            if byte == b"\n":
                return bytes(line)
        raise ValueError(f"no proof line (it sent {bytes(line[:40])!r})")

    def _reject(self, conn: socket.socket, why: str) -> None:
        with self._lock:
            self.rejected.append(why)
            del self.rejected[:-50]
        with contextlib.suppress(OSError):
            conn.close()

    def accept(self, deadline: float) -> StdioRelay:
        """Wait (until ``deadline``, a :func:`time.monotonic` time) for the agent with the
        right proof and its ready line; returns the relay over its connection (call
        :meth:`StdioRelay.start` for the gRPC target)."""
        if not self._paired_event.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                dropped = list(self.rejected)
            detail = f"; dropped: {'; '.join(dropped[-5:])}" if dropped else ""
            raise SandboxError(
                f"no agent connected to the reverse listener at "
                f"{self._address[0]}:{self._address[1]} in time{detail}"
            )
        with self._lock:
            conn, self._paired = self._paired, None
        if conn is None:
            raise SandboxError("the reverse listener's connection was already taken or closed")
        conn.settimeout(None)
        tune_tcp(conn)
        relay = StdioRelay(SocketStream(conn), "binary", carrier="reverse")
        try:
            relay.wait_ready(deadline)
        except BaseException:
            relay.close()
            raise
        return relay

    def close(self) -> None:
        """Stop listening, drop the connections still awaiting their proof and a paired
        connection nobody took, and wait for the listener's threads."""
        with self._lock:
            self._closed = True
            conn, self._paired = self._paired, None
        if conn is not None:
            conn.close()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)  # no new checks after this
        with self._lock:
            checking = dict(self._checking)
        for pending in checking:
            with contextlib.suppress(OSError):
                pending.shutdown(socket.SHUT_RDWR)  # its check ends at once
        for thread in checking.values():
            if thread is not threading.current_thread():
                with contextlib.suppress(RuntimeError):  # never started
                    thread.join(2.0)
