"""Relay carriers: many byte streams multiplexed over one byte pipe (standard library only).

When a sandbox offers no inbound port, the gRPC connection between host and agent travels
inside another byte pipe: the agent's stdin/stdout (``stdio`` carrier) or one TCP connection
the agent dials out (``reverse`` carrier). The gRPC protocol is unchanged; each connection
the host's gRPC channel opens becomes one *stream* of :class:`Frame` s over that pipe. Both
ends import this module: the agent's end is :mod:`rlm_core.agent.relay`, the host's
:mod:`rlm_core.bridge.carriers.stdio`.

Frames (the same in both directions)::

    magic 0xA7 | type (1 byte) | stream id (4 bytes) | payload length (4 bytes) | payload

big-endian, with types ``OPEN`` (host to agent: connect a new stream; empty payload),
``DATA`` (bytes of a stream) and ``CLOSE`` (the stream ended, both directions; the payload
may hold a short UTF-8 reason). Two encodings: ``binary`` (the frames as they are) and
``base64`` (text-safe: each batch of frames is one base64 line ending in ``\\n``, for
carriers that decode output as text or accept text input only). Anything that is not a
valid frame is a fatal :class:`FramingError`, never skipped.

:class:`Multiplexer` is the relay engine both ends share: one reader thread per local
socket, one writer thread that sends everything queued in one call (coalescing: an exec's
stdin may cost one network round trip per write), and a bound on the bytes queued
(backpressure: the local readers wait while too much is queued).
"""

from __future__ import annotations

import binascii
import collections
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

FRAMINGS = ("binary", "base64")
"""The encodings a carrier can use."""

OPEN = 1
"""Frame type: open a new stream (host to agent only)."""
DATA = 2
"""Frame type: bytes of a stream."""
CLOSE = 3
"""Frame type: the stream ended (both directions)."""
FRAME_NAMES = {OPEN: "OPEN", DATA: "DATA", CLOSE: "CLOSE"}
"""Frame type to name, for messages."""

MAGIC = 0xA7
"""First byte of every frame: garbage is caught at its first byte."""
HEADER = struct.Struct(">BBII")
"""Frame header: magic, type, stream id, payload length."""
MAX_PAYLOAD = 1 << 20
"""Largest payload of one frame."""
MAX_BATCH = 4 << 20
"""Most frame bytes one ``send`` carries."""
MAX_QUEUED = 8 << 20
"""Frame bytes queued for sending beyond which local readers wait (backpressure)."""
SLOW_SEND = 0.005
"""A ``send`` that takes longer (seconds) marks the pipe as one that costs a round trip
per write: the writer then lingers for :data:`LINGER` before each send."""
LINGER = 0.002
"""Seconds the writer of a slow pipe waits for more frames before sending: gRPC writes a
connection's preface and settings, or an acknowledgement and a request, a moment apart."""
MAX_LINE = 8 << 20
"""Longest base64 line a decoder accepts (a full batch is about 5.6 MiB of text)."""
RECV_BYTES = 256 * 1024
"""Bytes read from a local socket at a time (one ``DATA`` frame at most)."""

REVERSE_PREFIX = "RLM-REVERSE"
"""First word of the proof line an agent sends on a reverse connection."""


class FramingError(ValueError):
    """Bytes on a carrier that are not valid frames."""


class Frame(NamedTuple):
    """One frame: its type, stream id and payload."""

    kind: int
    stream: int
    payload: bytes = b""


def _excerpt(data: bytes | bytearray | memoryview | str, limit: int = 40) -> str:
    """A short ``repr`` of the start of ``data``, for error messages."""
    head = data[:limit]
    text = repr(head if isinstance(head, str) else bytes(head))
    return text + ("..." if len(data) > limit else "")


def encode_frames(frames: Iterable[Frame], framing: str = "binary") -> bytes:
    """Encode ``frames`` as one batch: their bytes, or one base64 line."""
    parts: list[bytes] = []
    for frame in frames:
        parts.append(HEADER.pack(MAGIC, frame.kind, frame.stream, len(frame.payload)))
        parts.append(frame.payload)
    raw = b"".join(parts)
    if framing == "binary":
        return raw
    if framing == "base64":
        return binascii.b2a_base64(raw, newline=True)
    raise ValueError(f"unknown framing {framing!r} (expected one of {', '.join(FRAMINGS)})")


class FrameDecoder:
    """Decodes frames from chunks split at any boundary.

    ``binary`` takes bytes; ``base64`` takes bytes or ``str`` (an SDK may hand over decoded
    text). :meth:`feed` raises :class:`FramingError` on anything that is not a frame, and the
    decoder is unusable afterwards.
    """

    def __init__(self, framing: str = "binary", max_payload: int = MAX_PAYLOAD) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r} (expected one of {', '.join(FRAMINGS)})")
        self.framing = framing
        self.max_payload = max_payload
        self._frames = bytearray()  # undecoded frame bytes
        self._text = bytearray()  # base64: the current, unfinished line
        self._scanned = 0  # base64: bytes of _text known to hold no newline

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make up a whole frame (or line)."""
        return len(self._frames) + len(self._text)

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> list[Frame]:
        """Decode ``chunk``: every frame it completes, in order."""
        if self.framing == "binary":
            if isinstance(chunk, str):
                raise FramingError(
                    f"text on a binary carrier: {_excerpt(chunk)} (use framing='base64' "
                    "for carriers that deliver text)"
                )
            return self._frames_from(chunk)
        if isinstance(chunk, str):
            try:
                chunk = chunk.encode("ascii")
            except UnicodeEncodeError:
                raise FramingError(
                    f"non-ASCII text on a base64 carrier: {_excerpt(chunk)}"
                ) from None
        frames: list[Frame] = []
        self._text += chunk
        while True:
            end = self._text.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._text)
                if len(self._text) > MAX_LINE:
                    raise FramingError(
                        f"a base64 line longer than {MAX_LINE} bytes: {_excerpt(self._text)}"
                    )
                return frames
            line = self._text[:end]
            del self._text[: end + 1]
            self._scanned = 0
            if line.endswith(b"\r"):  # a terminal may turn \n into \r\n
                del line[-1:]
            try:
                raw = binascii.a2b_base64(line, strict_mode=True)
            except binascii.Error as exc:
                raise FramingError(f"not a base64 line ({exc}): {_excerpt(line)}") from None
            if not raw:
                raise FramingError("an empty line on a base64 carrier")
            frames.extend(self._frames_from(raw))

    def _frames_from(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        buffer = self._frames
        buffer += chunk
        frames: list[Frame] = []
        position = 0
        size = len(buffer)
        with memoryview(buffer) as view:
            while size - position >= HEADER.size:
                magic, kind, stream, length = HEADER.unpack_from(buffer, position)
                if magic != MAGIC or kind not in FRAME_NAMES:
                    raise FramingError(f"not a frame: {_excerpt(view[position : position + 40])}")
                if stream == 0:
                    raise FramingError(f"a {FRAME_NAMES[kind]} frame for stream 0")
                if length > self.max_payload:
                    raise FramingError(
                        f"a {FRAME_NAMES[kind]} frame of {length} bytes (at most "
                        f"{self.max_payload}): {_excerpt(view[position : position + 40])}"
                    )
                end = position + HEADER.size + length
                if end > size:
                    break
                frames.append(Frame(kind, stream, bytes(view[position + HEADER.size : end])))
                position = end
        del buffer[:position]
        return frames


def reverse_proof(token: str) -> str:
    """The line an agent sends first on a reverse connection: proof that it knows the
    session token, without sending the token (HMAC-SHA256 keyed by the token)."""
    import hashlib
    import hmac

    digest = hmac.new(token.encode(), b"rlm-reverse", hashlib.sha256).hexdigest()
    return f"{REVERSE_PREFIX} {digest}\n"


def tune_tcp(sock: socket.socket) -> None:
    """For a carrier's TCP connection: no Nagle delay, and keepalive probes so that a
    connection that silently died is noticed within about a minute (where supported)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 15),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 4),
        ("TCP_USER_TIMEOUT", 60_000),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


@dataclass(eq=False)
class _Stream:
    id: int
    sock: socket.socket
    lock: threading.Lock = field(default_factory=threading.Lock)  # writes vs. close
    closed: bool = False


class Multiplexer:
    """Relays local stream sockets over one byte pipe: either end of a carrier.

    ``send`` writes one batch to the pipe (only the writer thread calls it). The owner feeds
    what it reads from the pipe to :meth:`feed` (from one thread), adds local connections
    with :meth:`open_stream` (host end) or passes ``on_open`` (agent end: connects a local
    socket for each ``OPEN``), and calls :meth:`ended` when the pipe reaches its end (or
    :meth:`fail` when reading it fails). Once the pipe fails, every local socket is shut
    down at once and :attr:`error` says why; ``on_end`` is called once with that reason.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        framing: str = "binary",
        *,
        name: str = "relay",
        on_open: Callable[[int], socket.socket] | None = None,
        on_end: Callable[[str], None] | None = None,
        max_batch: int = MAX_BATCH,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._send = send
        self._decoder = FrameDecoder(framing)
        self.framing = framing
        self.name = name
        self._on_open = on_open
        self._on_end = on_end
        self._max_batch = max_batch
        self._max_queued = max_queued
        self.error: str | None = None
        """Why the pipe failed (``None`` while it works, or after a normal close)."""
        self._lock = threading.Lock()
        self._has_frames = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._queue: collections.deque[Frame] = collections.deque()
        self._queued = 0
        self._sending = False
        self._dead = False
        self._streams: dict[int, _Stream] = {}
        self._unannounced: set[_Stream] = set()  # host end: no bytes (and no OPEN) yet
        self._highest = 0  # highest stream id ever opened
        self._threads: list[threading.Thread] = []
        self._writer: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether the relay still runs (not failed, not closed)."""
        return not self._dead

    def ended(self, what: str) -> None:
        """The pipe reached its end: fail with ``what``, noting a frame cut short."""
        left = self._decoder.pending
        self.fail(f"{what}, in the middle of a frame ({left} bytes left over)" if left else what)

    def start(self) -> None:
        """Start the writer thread."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"rlm-relay-{self.name}-writer", daemon=True
            )
            self._writer.start()

    # -- local streams --------------------------------------------------------------------

    def open_stream(self, sock: socket.socket) -> bool:
        """Relay a new local connection as a new stream (host end); ``False`` (and the
        socket closed) when the relay is no longer running.

        The stream's ``OPEN`` goes out with its first bytes, in the same batch (the local
        client always speaks first: gRPC's preface), so a carrier that pays a round trip
        per write pays one for both, and a connection that closes silently costs nothing.
        """
        with self._lock:
            dead = self._dead
        if dead:
            _shut(sock)
            sock.close()
            return False
        self._attach(0, sock)
        return True

    def _attach(self, stream_id: int, sock: socket.socket) -> None:
        """Relay ``sock`` as stream ``stream_id`` (``0``: numbered at its first bytes)."""
        stream = _Stream(stream_id, sock)
        thread = threading.Thread(
            target=self._read_local,
            args=(stream,),
            name=f"rlm-relay-{self.name}-stream-{stream_id or 'new'}",
            daemon=True,
        )
        with self._lock:
            attached = not self._dead
            if attached:
                if stream_id:
                    self._streams[stream_id] = stream
                else:
                    self._unannounced.add(stream)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
        if not attached:
            _shut(sock)
            sock.close()
            return
        thread.start()

    def _read_local(self, stream: _Stream) -> None:
        """Send what the local socket delivers as DATA frames, then CLOSE."""
        reason = ""
        try:
            while True:
                data = stream.sock.recv(RECV_BYTES)
                if not data:
                    break
                if not stream.id:
                    if not self._announce(stream, data):
                        break
                    continue
                if not self._enqueue(Frame(DATA, stream.id, data)):
                    break
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._drop(stream, notify=reason)
            with stream.lock:
                stream.closed = True
                stream.sock.close()

    def _announce(self, stream: _Stream, data: bytes) -> bool:
        """Number a new stream and queue its ``OPEN`` and first bytes together."""
        with self._lock:
            self._unannounced.discard(stream)
            if self._dead:
                return False
            self._highest += 1
            stream.id = self._highest
            self._streams[stream.id] = stream
            self._queue_locked(Frame(OPEN, stream.id))
            self._queue_locked(Frame(DATA, stream.id, data))
        return True

    def _drop(self, stream: _Stream, notify: str | None) -> None:
        """Forget ``stream`` and shut its socket down; tell the peer when ``notify``."""
        with self._lock:
            self._unannounced.discard(stream)
            removed = self._streams.get(stream.id) is stream
            if removed:
                del self._streams[stream.id]
                if notify is not None and not self._dead:
                    self._queue_locked(Frame(CLOSE, stream.id, notify.encode()[:200]))
        _shut(stream.sock)

    # -- the pipe ---------------------------------------------------------------------------

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Handle bytes read from the pipe (from one thread). Invalid bytes fail the relay."""
        if self._dead:
            return
        try:
            frames = self._decoder.feed(chunk)
        except FramingError as exc:
            self.fail(f"the carrier is corrupt: {exc}")
            return
        for frame in frames:
            if not self._dispatch(frame):
                return

    def _dispatch(self, frame: Frame) -> bool:
        kind, stream_id, payload = frame
        if kind == OPEN:
            if self._on_open is None:
                self.fail(
                    f"the carrier is corrupt: an OPEN frame for stream {stream_id} from the agent"
                )
                return False
            if stream_id <= self._highest:
                self.fail(f"the carrier is corrupt: stream {stream_id} opened twice")
                return False
            self._highest = stream_id
            try:
                sock = self._on_open(stream_id)
            except OSError as exc:
                self._enqueue(
                    Frame(CLOSE, stream_id, f"connect failed: {exc}".encode()[:200]), control=True
                )
                return True
            self._attach(stream_id, sock)
            return True
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._highest:
                name = FRAME_NAMES[kind]
                self.fail(
                    f"the carrier is corrupt: a {name} frame for stream {stream_id}, never opened"
                )
                return False
            return True  # a stream that has just closed: its last frames crossed the CLOSE
        if kind == CLOSE:
            self._drop(stream, notify=None)
            return True
        with stream.lock:
            if stream.closed:
                return True
            try:
                stream.sock.sendall(payload)
            except OSError as exc:
                failed = f"{type(exc).__name__}: {exc}"
            else:
                return True
        self._drop(stream, notify=failed)
        return True

    def fail(self, reason: str) -> None:
        """The pipe ended or broke: record ``reason`` and end every local stream at once."""
        if self._halt(reason) and self._on_end is not None:
            self._on_end(reason)

    def _halt(self, reason: str | None) -> bool:
        """Stop for good (recording ``reason`` as the error when given): drop what is
        queued, wake every waiting thread, shut every local socket. True the first time."""
        with self._lock:
            first = not self._dead
            if first:
                self._dead = True
                self.error = reason
            streams = [*self._streams.values(), *self._unannounced]
            self._streams.clear()
            self._unannounced.clear()
            self._queue.clear()
            self._queued = 0
            self._has_frames.notify_all()
            self._has_room.notify_all()
        for stream in streams:
            _shut(stream.sock)
        return first

    def _enqueue(self, frame: Frame, *, control: bool = False) -> bool:
        """Queue a frame for the writer; DATA waits while too much is queued."""
        with self._lock:
            while not control and not self._dead and self._queued >= self._max_queued:
                self._has_room.wait()
            if self._dead:
                return False
            self._queue_locked(frame)
            return True

    def _queue_locked(self, frame: Frame) -> None:
        self._queue.append(frame)
        self._queued += HEADER.size + len(frame.payload)
        self._has_frames.notify()

    def _write_loop(self) -> None:
        slow = False  # whether the last send cost a round trip (an exec's stdin API)
        while True:
            with self._lock:
                while not self._queue and not self._dead:
                    self._has_frames.wait()
                if slow:  # gather what follows within a moment: one round trip for all
                    until = time.monotonic() + LINGER
                    while not self._dead and (left := until - time.monotonic()) > 0:
                        self._has_frames.wait(left)
                if self._dead:
                    return
                batch: list[Frame] = []
                size = 0
                while self._queue:
                    cost = HEADER.size + len(self._queue[0].payload)
                    if batch and size + cost > self._max_batch:
                        break
                    batch.append(self._queue.popleft())
                    size += cost
                self._queued -= size
                self._sending = True
                self._has_room.notify_all()
            started = time.monotonic()
            try:
                self._send(encode_frames(batch, self.framing))
                slow = time.monotonic() - started > SLOW_SEND
            except Exception as exc:
                self.fail(f"writing to the carrier failed: {type(exc).__name__}: {exc}")
                return
            finally:
                with self._lock:
                    self._sending = False
                    self._has_room.notify_all()

    # -- the end ----------------------------------------------------------------------------

    def close(self, drain: float = 0.0) -> None:
        """Stop relaying. With ``drain`` > 0, first wait up to that many seconds for the
        local streams to end by themselves and everything queued to be sent."""
        if drain > 0 and not self._dead:
            deadline = time.monotonic() + drain
            for thread in list(self._threads):
                with contextlib.suppress(RuntimeError):  # not started yet
                    thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                while (self._queue or self._sending) and not self._dead:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._has_room.wait(remaining)
        self._halt(None)

    def join(self, timeout: float = 2.0) -> None:
        """Wait (up to ``timeout`` s in all) for the relay's threads to end."""
        deadline = time.monotonic() + timeout
        threads = [*self._threads, *([self._writer] if self._writer else [])]
        for thread in threads:
            if thread is not threading.current_thread():
                with contextlib.suppress(RuntimeError):  # not started yet
                    thread.join(max(0.0, deadline - time.monotonic()))


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways (wakes a thread blocked reading it); never raises."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
