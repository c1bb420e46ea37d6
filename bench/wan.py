"""WAN workload: the bridge through a link that delays every byte 25 ms each way (RTT 50 ms).

The agent runs as a local process (:class:`~rlm_core.environments.loopback.LoopbackLauncher`)
over each carrier (``dial``, ``stdio`` with ``binary`` and ``base64`` framing, ``reverse``),
in plaintext and with pinned session TLS, with a delay line put between the two ends
through the launcher's two hooks:

* ``dial`` and ``reverse`` (:meth:`LoopbackLauncher.link_address`): a loopback TCP proxy
  whose every chunk read is written out 25 ms later, per direction, each direction with its
  own reader and writer threads (a delay line, not stop-and-wait: throughput is kept);
* ``stdio`` (:meth:`LoopbackLauncher.link_stream`): the process's pipes wrapped so that each
  ``send`` and each chunk read is delivered 25 ms later, in order, without holding the
  sender; and a "blocking writes" variant where ``send`` also returns only one RTT later,
  as a provider's stdin write over its API does (what the relay's write coalescing is for).

A loopback ``connect`` through the proxy completes at once, so TCP's three-way handshake
is not in the ``dial`` and ``reverse`` rows; the ``*-handshake`` variants (session start
only) model it: the connecting side's first byte arrives 1.5 RTT after its ``connect``,
as on a real link.

Everything is reported in round trips of the link (time / 50 ms), medians of several runs:
the session start (``env.start`` until ready), split into the agent's own start (until it
printed its ready line) and the part beyond it; a trivial cell; a cell with one
``llm_query``; a cell with a 64-prompt ``llm_query_batched``; and a 50 MiB context load in
MB/s. The reference ``rlms`` 0.1.3 cannot be run without a cloud account; its cost of one
sub-call on the same link is computed from its source (see :data:`RLMS_NOTE`).

    .venv/bin/python bench/wan.py                      # every variant, prints the table (~2.5 min)
    .venv/bin/python bench/wan.py --quick              # fewer repetitions
    .venv/bin/python bench/wan.py --trace              # + what crossed the link, named
    .venv/bin/python bench/wan.py --variant dial-tls --emit   # one variant, JSON samples

``bench/run.py`` runs it as workload 9 (``--only wan``), one worker per variant, and writes
its section into ``bench/results/latest.md``. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import binascii
import collections
import contextlib
import importlib
import os
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import emit, emit_info, make_text

DELAY = 0.025
"""One-way delay of the link, seconds."""
RTT = 2 * DELAY
BATCH = 64
CONTEXT_MIB = 50
MIB = 1024 * 1024
READ = 1 << 20


@dataclass(frozen=True)
class Variant:
    """One way of linking host and agent."""

    carrier: str
    framing: str = "binary"
    tls: bool = False
    blocking: bool = False
    """``stdio``: each ``send`` returns one RTT after it was called."""
    handshake: bool = False
    """``dial``, ``reverse``: TCP's three-way handshake is modelled (session start only)."""
    provider: str | None = None
    """``modal``, ``e2b``, ``daytona`` (its PTY) or ``daytona-session``: that plugin's
    environment through its wire-level fake, with the link between the unmodified SDK and
    the fake service (the relay rides the SDK's exec calls, as on the real service)."""

    @property
    def label(self) -> str:
        """How the table names the carrier."""
        if self.provider is not None:
            return f"{self.provider} (fake), stdio ({self.framing}) over the SDK's exec"
        if self.carrier != "stdio":
            return self.carrier + (", TCP handshake modelled" if self.handshake else "")
        return f"stdio ({self.framing})" + (", blocking writes" if self.blocking else "")


VARIANTS: dict[str, Variant] = {
    "dial": Variant("dial"),
    "dial-tls": Variant("dial", tls=True),
    "stdio": Variant("stdio"),
    "stdio-tls": Variant("stdio", tls=True),
    "stdio-base64": Variant("stdio", "base64"),
    "stdio-base64-tls": Variant("stdio", "base64", tls=True),
    "stdio-blocking": Variant("stdio", blocking=True),
    "stdio-blocking-tls": Variant("stdio", tls=True, blocking=True),
    "reverse": Variant("reverse"),
    "reverse-tls": Variant("reverse", tls=True),
    "dial-handshake": Variant("dial", handshake=True),
    "dial-tls-handshake": Variant("dial", tls=True, handshake=True),
    "reverse-handshake": Variant("reverse", handshake=True),
    "reverse-tls-handshake": Variant("reverse", tls=True, handshake=True),
    "modal-fake": Variant("stdio", provider="modal"),
    "modal-fake-tls": Variant("stdio", tls=True, provider="modal"),
    "e2b-fake": Variant("stdio", "base64", provider="e2b"),
    "e2b-fake-tls": Variant("stdio", "base64", tls=True, provider="e2b"),
    "prime-fake": Variant("stdio", provider="prime"),
    "prime-fake-tls": Variant("stdio", tls=True, provider="prime"),
    "daytona-fake": Variant("stdio", provider="daytona"),
    "daytona-fake-tls": Variant("stdio", tls=True, provider="daytona"),
    "daytona-session-fake": Variant("stdio", "base64", provider="daytona-session"),
    "daytona-session-fake-tls": Variant("stdio", "base64", tls=True, provider="daytona-session"),
}
"""Every variant measured, by name (``--variant``)."""


def variant_name(variant: Variant) -> str:
    """The name of ``variant`` in :data:`VARIANTS`."""
    return next(name for name, v in VARIANTS.items() if v == variant)


CELLS = {
    "cell": "x = 1",
    "subcall": "_r = llm_query('q')",
    "batch": f"_r = llm_query_batched(['q%d' % _i for _i in range({BATCH})])",
}
"""Timed cells by metric name."""


def now() -> float:
    """The clock of every timestamp here."""
    return time.perf_counter()


def sleep_until(when: float) -> None:
    """Sleep until ``when`` (a :func:`now` time)."""
    left = when - now()
    if left > 0:
        time.sleep(left)


# -- what crosses the link (for --trace) ------------------------------------------------------

H2_TYPES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
TLS_TYPES = {20: "CCS", 21: "alert", 22: "handshake", 23: "TLS-data"}
TLS_HANDSHAKES = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket"}
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RELAY_HEADER = struct.Struct(">BBII")
RELAY_TYPES = {1: "OPEN", 2: "DATA", 3: "CLOSE"}


class RecordParser:
    """Names the HTTP/2 frames (plaintext) or TLS records in a byte stream split anywhere."""

    def __init__(self, tls: bool, client: bool) -> None:
        self.tls = tls
        self._header = 5 if tls else 9
        self._buffer = bytearray()
        self._skip = 0
        self._preface = len(H2_PREFACE) if (client and not tls) else 0

    def feed(self, data: bytes) -> list[str]:
        names: list[str] = []
        view = memoryview(data)
        while view:
            if self._preface:
                take = min(self._preface, len(view))
                self._preface -= take
                view = view[take:]
                if not self._preface:
                    names.append("preface")
                continue
            if self._skip:
                take = min(self._skip, len(view))
                self._skip -= take
                view = view[take:]
                continue
            need = self._header - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) < self._header:
                break
            header = bytes(self._buffer)
            self._buffer.clear()
            names.append(self._name(header, view))
        return names

    def _name(self, header: bytes, rest: memoryview) -> str:
        if self.tls:
            kind, length = header[0], int.from_bytes(header[3:5], "big")
            name = TLS_TYPES.get(kind, f"tls{kind}")
            if kind == 22 and rest:
                name = TLS_HANDSHAKES.get(rest[0], "handshake")
        else:
            length, kind, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
            name = H2_TYPES.get(kind, f"h2:{kind}")
            if kind in (4, 6) and flags & 1:
                name += "-ACK"
        self._skip = length
        return name


class RelayParser:
    """Names what crosses a relay carrier: its lines first, then relay frames with the
    HTTP/2 frames or TLS records inside each stream."""

    def __init__(self, lines: list[str], framing: str, tls: bool, host_side: bool) -> None:
        self._lines = list(lines)  # names of the lines expected before the frames
        self._framing = framing
        self._tls = tls
        self._host_side = host_side
        self._partial = bytearray()
        self._frames = bytearray()
        self._inner: dict[int, RecordParser] = {}

    def feed(self, data: bytes) -> list[str]:
        names: list[str] = []
        self._partial += data
        while self._lines:
            end = self._partial.find(b"\n")
            if end < 0:
                return names
            line = bytes(self._partial[: end + 1])
            del self._partial[: end + 1]
            if b"RLM-AGENT-READY" in line:
                self._lines = []
                names.append("ready-line")
            else:
                names.append(self._lines.pop(0) if self._lines[0] != "ready-line" else "preamble")
        if self._framing == "base64":
            while True:
                end = self._partial.find(b"\n")
                if end < 0:
                    break
                self._frames += binascii.a2b_base64(bytes(self._partial[:end]))
                del self._partial[: end + 1]
        else:
            self._frames += self._partial
            self._partial.clear()
        while len(self._frames) >= RELAY_HEADER.size:
            _, kind, stream, length = RELAY_HEADER.unpack_from(self._frames)
            if len(self._frames) < RELAY_HEADER.size + length:
                break
            payload = bytes(self._frames[RELAY_HEADER.size : RELAY_HEADER.size + length])
            del self._frames[: RELAY_HEADER.size + length]
            name = RELAY_TYPES.get(kind, f"relay{kind}")
            if kind == 2:
                parser = self._inner.setdefault(stream, RecordParser(self._tls, self._host_side))
                name += "[" + ",".join(squeeze(parser.feed(payload))) + "]"
            names.append(f"{name}#{stream}")
        return names


def squeeze(names: list[str]) -> list[str]:
    """``[a, a, a, b]`` -> ``["a x3", "b"]``."""
    out: list[str] = []
    for name, group in _groups(names):
        out.append(name if group == 1 else f"{name} x{group}")
    return out


def _groups(names: list[str]) -> Iterator[tuple[str, int]]:
    last, count = None, 0
    for name in names:
        if name == last:
            count += 1
            continue
        if last is not None:
            yield last, count
        last, count = name, 1
    if last is not None:
        yield last, count


FLIGHT_GAP = 0.002
"""Departures in one direction further apart than this (seconds) are separate flights."""


@dataclass
class Trace:
    """Bytes entering the link, by direction (``>``: host to agent, ``<``: agent to host).

    The taps parse everything from the link's start (so frames are named correctly later
    on) until :attr:`done`; they record only while :attr:`recording`."""

    events: list[tuple[float, str, int, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    recording: bool = False
    done: bool = False

    def record(self, direction: str, size: int, names: list[str]) -> None:
        with self.lock:
            self.events.append((now(), direction, size, names))

    def take(self) -> list[tuple[float, str, int, list[str]]]:
        """The events recorded so far (and forget them)."""
        with self.lock:
            events, self.events = self.events, []
        return sorted(events)


def flights(events: list[tuple[float, str, int, list[str]]], origin: float) -> list[str]:
    """One line per flight (departures in one direction, each within :data:`FLIGHT_GAP`
    of the one before), with its time since ``origin`` in RTT, its bytes and what it
    carried."""
    lines: list[str] = []
    flight: list[tuple[float, str, int, list[str]]] = []

    def close() -> None:
        if not flight:
            return
        start, direction = flight[0][0], flight[0][1]
        size = sum(e[2] for e in flight)
        names = squeeze([n for e in flight for n in e[3]])
        arrow = "host → agent" if direction == ">" else "agent → host"
        lines.append(f"{(start - origin) / RTT:+6.2f} RTT  {arrow}  {size:>6} B  {' '.join(names)}")

    for event in events:
        if flight and (event[1] != flight[-1][1] or event[0] - flight[-1][0] > FLIGHT_GAP):
            close()
            flight = []
        flight.append(event)
    close()
    return lines


class Tap:
    """Names and records one direction of one connection for a :class:`Trace`."""

    def __init__(self, trace: Trace | None, direction: str, parser: Any) -> None:
        self.trace = trace
        self.direction = direction
        self.parser = parser

    def __call__(self, data: bytes) -> None:
        trace = self.trace
        if trace is None or trace.done:
            return
        try:
            names = self.parser.feed(data) if self.parser is not None else []
        except (ValueError, binascii.Error):
            names, self.parser = ["(unparsed)"], None
        if trace.recording:
            trace.record(self.direction, len(data), names)


# -- the delay line ---------------------------------------------------------------------------


class DelayLine:
    """Delivers byte chunks to ``deliver`` at their due times, in order, on its own thread
    (chunks due together go in one call). ``None`` is the end: ``on_end`` is called."""

    def __init__(
        self,
        deliver: Callable[[bytes], None],
        name: str,
        on_end: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._on_end = on_end
        self._on_error = on_error
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, due: float, data: bytes | None) -> None:
        with self._ready:
            self._queue.append((due, data))
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._queue and not self._closed:
                        self._ready.wait()
                    if self._closed:
                        return
                    due = self._queue[0][0]
                sleep_until(due)
                parts: list[bytes] = []
                end = False
                with self._ready:
                    t = now()
                    while self._queue and self._queue[0][0] <= t:
                        data = self._queue.popleft()[1]
                        if data is None:
                            end = True
                            break
                        parts.append(data)
                if parts:
                    self._deliver(b"".join(parts))
                if end:
                    if self._on_end is not None:
                        self._on_end()
                    return
        except Exception as exc:  # the far end is gone
            self.error = exc
            if self._on_error is not None:
                self._on_error(exc)


class DelayProxy:
    """A loopback TCP proxy to ``target`` that delays every byte by :data:`DELAY` per
    direction. ``host_dials``: the connecting side is the host (``dial``), else the agent
    (``reverse``). ``handshake``: model TCP's three-way handshake (the connecting side's
    first byte arrives 1.5 RTT after it connected, the other side's 2 RTT)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host_dials: bool,
        handshake: bool,
        trace: Trace | None,
        tls: bool,
        framing: str,
        relay: bool,
    ) -> None:
        self.target = target
        self.host_dials = host_dials
        self.handshake = handshake
        self.trace = trace
        self.tls = tls
        self.framing = framing
        self.relay = relay
        self._sockets: list[socket.socket] = []
        self._lines: list[DelayLine] = []
        self._lock = threading.Lock()
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        threading.Thread(target=self._accept, name="wan-proxy-accept", daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._pair, args=(client,), daemon=True).start()

    def _parser(self, host_to_agent: bool) -> Any:
        if self.trace is None:
            return None
        if not self.relay:
            return RecordParser(self.tls, client=host_to_agent)
        lines = [] if host_to_agent else ["proof-line", "ready-line"]
        return RelayParser(lines, self.framing, self.tls, host_side=host_to_agent)

    def _pair(self, client: socket.socket) -> None:
        opened = now()
        first = opened + (3 * DELAY if self.handshake else DELAY)
        connected = threading.Event()
        upstream_box: list[socket.socket] = []

        def fail(_: BaseException | None = None) -> None:
            for sock in (client, *upstream_box):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def to_upstream(data: bytes) -> None:
            connected.wait()
            if not upstream_box:
                raise ConnectionError("the upstream connection failed")
            upstream_box[0].sendall(data)

        def end_upstream() -> None:
            connected.wait()
            for sock in upstream_box:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

        def end_client() -> None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

        up = DelayLine(to_upstream, "wan-proxy-up", end_upstream, fail)
        down = DelayLine(client.sendall, "wan-proxy-down", end_client, fail)
        with self._lock:
            self._lines += [up, down]
        client_dir = ">" if self.host_dials else "<"
        server_dir = "<" if self.host_dials else ">"
        tap_up = Tap(self.trace, client_dir, self._parser(self.host_dials))
        threading.Thread(target=self._pump, args=(client, up, tap_up, first), daemon=True).start()
        if self.handshake:
            sleep_until(opened + 3 * DELAY)  # SYN and SYN-ACK crossed, the ACK arrives
        try:
            upstream = socket.create_connection(self.target)
        except OSError as exc:
            connected.set()
            fail(exc)
            return
        self._keep(upstream)
        upstream_box.append(upstream)
        connected.set()
        tap_down = Tap(self.trace, server_dir, self._parser(not self.host_dials))
        self._pump(upstream, down, tap_down, 0.0)

    @staticmethod
    def _pump(source: socket.socket, line: DelayLine, tap: Tap, earliest: float) -> None:
        while True:
            try:
                data = source.recv(READ)
            except OSError:
                data = b""
            t = now()
            if data:
                tap(data)
            line.put(max(t + DELAY, earliest), data or None)
            if not data:
                return

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            lines, self._lines = self._lines, []
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for line in lines:
            line.close()


class DelayedStream:
    """A stdio carrier's :class:`~rlm_core.bridge.carriers.stdio.ByteStream` through the
    link: each ``send`` reaches the agent :data:`DELAY` later and each chunk of its output
    reaches the host :data:`DELAY` later. ``blocking``: ``send`` returns one RTT after it
    was called (a provider's stdin write is one request and its answer)."""

    _END = object()

    def __init__(self, inner: Any, *, blocking: bool, trace: Trace | None, framing: str, tls: bool):
        self._inner = inner
        self._blocking = blocking
        self.ready_at: float | None = None
        """When the agent's ready line came out of its process (before the delay)."""
        self._tail = b""
        self._down = DelayLine(inner.send, "wan-stdio-down")
        self._up: collections.deque[tuple[float, object]] = collections.deque()
        self._up_ready = threading.Condition()
        self._tap_down = Tap(trace, ">", RelayParser(["secrets-line"], framing, tls, True))
        self._tap_up = Tap(trace, "<", RelayParser(["ready-line"], framing, tls, False))
        threading.Thread(target=self._pump, name="wan-stdio-up", daemon=True).start()

    def send(self, data: bytes) -> None:
        called = now()
        if self._down.error is not None:
            raise BrokenPipeError(f"the agent's stdin is gone: {self._down.error}")
        self._tap_down(data)
        self._down.put(called + DELAY, bytes(data))
        if self._blocking:
            sleep_until(called + RTT)

    def _pump(self) -> None:
        item: object = self._END
        try:
            for chunk in self._inner:
                t = now()
                if self.ready_at is None:
                    raw = chunk.encode() if isinstance(chunk, str) else chunk
                    seen = self._tail + raw
                    if b"RLM-AGENT-READY" in seen:
                        self.ready_at = t
                    self._tail = seen[-32:]
                self._tap_up(chunk.encode() if isinstance(chunk, str) else chunk)
                self._push(t + DELAY, chunk)
        except Exception as exc:
            item = exc
        self._push(now() + DELAY, item)

    def _push(self, due: float, item: object) -> None:
        with self._up_ready:
            self._up.append((due, item))
            self._up_ready.notify()

    def __iter__(self) -> Iterator[bytes | str]:
        while True:
            with self._up_ready:
                while not self._up:
                    self._up_ready.wait()
                due, item = self._up.popleft()
            sleep_until(due)
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes | str)
            yield item

    def close(self) -> None:
        self._down.close()
        self._inner.close()


# -- the environment ----------------------------------------------------------------------


@dataclass
class Link:
    """How the environment's launcher links the two ends."""

    blocking: bool = False
    handshake: bool = False
    trace: Trace | None = None


def environment_class() -> type:
    """:class:`WanEnvironment` (built on first use: rlm-core is imported only then)."""
    global _environment_class
    if _environment_class is not None:
        return _environment_class
    from rlm_core.environments.loopback import LoopbackEnvironment, LoopbackLauncher

    class WanLauncher(LoopbackLauncher):
        """The loopback launcher with the link put between host and agent."""

        def __init__(self, carrier: Any, framing: Any, tls: bool, link: Link) -> None:
            super().__init__(carrier, framing)
            self.tls = tls
            self.link = link
            self.proxies: list[DelayProxy] = []
            self.stream: DelayedStream | None = None
            self.launched_at: float | None = None

        def link_address(self, host: str, port: int) -> tuple[str, int]:
            proxy = DelayProxy(
                (host, port),
                host_dials=self.carrier == "dial",
                handshake=self.link.handshake,
                trace=self.link.trace,
                tls=self.tls,
                framing=self.framing,
                relay=self.carrier == "reverse",
            )
            self.proxies.append(proxy)
            return proxy.address

        def link_stream(self, stream: Any) -> Any:
            self.stream = DelayedStream(
                stream,
                blocking=self.link.blocking,
                trace=self.link.trace,
                framing=self.framing,
                tls=self.tls,
            )
            return self.stream

        def launch(self, request: Any) -> Any:
            connection = super().launch(request)
            self.launched_at = now()
            return connection

        @property
        def ready_at(self) -> float | None:
            """When the agent printed its ready line (``dial`` and ``reverse``: when the
            launcher read it on the process's own stdout and returned)."""
            if self.stream is not None:
                return self.stream.ready_at
            return self.launched_at

        def terminate(self) -> None:
            try:
                super().terminate()
            finally:
                for proxy in self.proxies:
                    proxy.close()

    class WanEnvironment(LoopbackEnvironment):
        """The loopback environment through the link (``link`` set after construction)."""

        name = "bench-wan"
        link = Link()

        def make_launcher(self) -> Any:
            self.launcher = WanLauncher(self.carrier, self.framing, self.tls, self.link)
            return self.launcher

    _environment_class = WanEnvironment
    return WanEnvironment


_environment_class: type | None = None


PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@dataclass(frozen=True)
class FakeProvider:
    """Where a provider plugin's wire-level fake and its environment class live."""

    fake: str
    """``module:Class`` of the fake service, in ``plugins/rlm-<plugin>/tests``."""
    url_key: str
    """The SDK's setting that holds the service's URL (the proxy takes its place)."""
    environment: str
    """``module:Class`` of the plugin's environment."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The environment's settings besides ``tls`` and ``startup_timeout``."""


FAKE_PROVIDERS = {
    "modal": FakeProvider("modal_fake:ModalFake", "MODAL_SERVER_URL", "rlm_modal:ModalEnvironment"),
    "e2b": FakeProvider("e2b_fake:FakeE2B", "E2B_API_URL", "rlm_e2b:E2BEnvironment"),
    "prime": FakeProvider(
        "prime_fake:FakePrime", "PRIME_API_BASE_URL", "rlm_prime:PrimeEnvironment"
    ),
    "daytona": FakeProvider(
        "daytona_fake:FakeDaytona", "DAYTONA_API_URL", "rlm_daytona:DaytonaEnvironment"
    ),
    "daytona-session": FakeProvider(
        "daytona_fake:FakeDaytona",
        "DAYTONA_API_URL",
        "rlm_daytona:DaytonaEnvironment",
        {"exec_mode": "session"},
    ),
}
"""Every provider a variant can name: ``Variant.provider``."""


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class ProviderLink:
    """A provider plugin's fake service behind a :class:`DelayProxy`: the SDK's settings
    point at the proxy, so every call the SDK makes (create, upload, the exec's stdin
    writes and stdout stream) crosses the link."""

    def __init__(self, provider: str) -> None:
        if provider not in FAKE_PROVIDERS:
            raise ValueError(f"no fake for {provider!r}")
        self.spec = FAKE_PROVIDERS[provider]
        plugin = provider.split("-")[0]
        sys.path.insert(0, str(PLUGINS / f"rlm-{plugin}" / "tests"))
        self.fake: Any = _load(self.spec.fake)().start()
        environ = self.fake.environ()
        target = urllib.parse.urlsplit(environ[self.spec.url_key])
        self.proxy = DelayProxy(
            (target.hostname or "127.0.0.1", target.port or 80),
            host_dials=True,
            handshake=False,
            trace=None,
            tls=False,
            framing="binary",
            relay=False,
        )
        linked = f"{target.scheme}://{self.proxy.address[0]}:{self.proxy.address[1]}"
        if plugin == "modal":
            self.fake.router_url = linked  # the exec's own connection crosses the link too
        if plugin == "daytona":
            self.fake.public_url = linked  # so do the toolbox's calls and WebSockets
            linked += target.path
        for key, value in environ.items():
            os.environ[key] = linked if value == environ[self.spec.url_key] else value

    def environment(self, tls: bool) -> Any:
        """A new environment of the provider, with pinned TLS or not."""
        kind = _load(self.spec.environment)
        return kind(tls=tls, startup_timeout=120, **self.spec.settings)

    def close(self) -> None:
        """Stop the proxy and the fake."""
        self.proxy.close()
        self.fake.stop()


class InstantSubcalls:
    """The host side of sub-calls: answers at once."""

    @staticmethod
    def _make(prompt: Any) -> Any:
        from rlm_core.types import RLMChatCompletion, UsageSummary

        return RLMChatCompletion("wan", prompt, "ok", UsageSummary(), 0.0)

    def llm_query(self, prompt: Any, model: str | None = None) -> Any:
        return self._make(prompt)

    def llm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[Any]:
        return [self._make(p) for p in prompts]

    rlm_query = llm_query
    rlm_query_batched = llm_query_batched


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Reps:
    starts: int = 5
    cells: int = 15
    loads: int = 3

    @classmethod
    def quick(cls) -> Reps:
        return cls(starts=2, cells=5, loads=1)


def run_cell(env: Any, code: str) -> None:
    result = env.execute(code)
    if result.error:
        raise RuntimeError(f"cell {code!r} failed: {result.error}")


def measure(variant: str, reps: Reps, *, trace: bool = False) -> list[dict[str, Any]]:
    """Every measurement of one variant, as sample records (``emit``'s fields); only the
    session start for a variant with the TCP handshake modelled."""
    from rlm_core.environments.base import Session

    spec = VARIANTS[variant]
    carrier, framing, tls, blocking, handshake = (
        spec.carrier,
        spec.framing,
        spec.tls,
        spec.blocking,
        spec.handshake,
    )
    if handshake:
        reps = Reps(starts=reps.starts, cells=0, loads=0)
    wan = environment_class()
    samples: dict[str, list[float]] = {
        m: [] for m in ("start", "agent", "beyond", *CELLS, "context-first", "context")
    }
    traced: list[str] = []
    env: Any = None
    meta = {"variant": variant, "carrier": carrier, "framing": framing, "tls": tls}
    meta |= {"blocking": blocking, "tcp_handshake": handshake, "delay_ms": DELAY * 1e3}
    link = Link()
    payload = make_text(CONTEXT_MIB * MIB) if reps.loads else ""
    provider = ProviderLink(spec.provider) if spec.provider else None

    def load(metric: str) -> None:
        begun = now()
        env.load_context(payload, 0)
        samples[metric].append(now() - begun)

    try:
        for i in range(reps.starts + 1):  # the first start warms up imports: not counted
            last = i == reps.starts
            traced_here = trace and last and provider is None
            link = Link(blocking, handshake, Trace(recording=True) if traced_here else None)
            if provider is not None:
                env = provider.environment(tls)
            else:
                env = wan(carrier=carrier, framing=framing, tls=tls)
                env.link = link
            begun = now()
            env.start(Session(subcalls=InstantSubcalls()))
            done = now()
            if provider is not None:  # until the SDK's exec call returned
                ready = begun + sum(env.active_launcher.timings.values())
            else:
                ready = env.launcher.ready_at
            if ready is None:
                raise RuntimeError("the agent's ready line was not seen")
            if i:
                samples["start"].append(done - begun)
                samples["agent"].append(ready - begun)
                samples["beyond"].append(done - ready)
            if link.trace is not None:
                link.trace.recording = False
                traced += [
                    f"session start: agent ready {(ready - begun) / RTT:.2f} RTT after "
                    f"env.start, session ready {(done - ready) / RTT:.2f} RTT after that "
                    "(times: since the agent was ready)",
                    *flights(link.trace.take(), ready),
                ]
            if not last:
                if i and reps.loads:  # a first load on each new connection
                    load("context-first")
                env.close()
                env = None
        if not reps.cells and not reps.loads:
            return finish(samples, meta, traced)
        for code in CELLS.values():  # warm-up
            run_cell(env, code)
            run_cell(env, code)
        if link.trace is not None:
            time.sleep(2 * RTT)  # let the link go quiet
            for code in CELLS.values():
                link.trace.take()
                link.trace.recording = True
                begun = now()
                run_cell(env, code)
                took = now() - begun
                link.trace.recording = False
                traced += [
                    "",
                    f"cell `{code}`: {took / RTT:.2f} RTT (times: since env.execute)",
                    *flights(link.trace.take(), begun),
                ]
            link.trace.done = True
        for _ in range(reps.cells):
            for metric, code in CELLS.items():
                begun = now()
                run_cell(env, code)
                samples[metric].append(now() - begun)
        for i in range(reps.loads + 1 if reps.loads else 0):  # the first load grows the window
            load("context" if i else "context-first")
        check = env.execute("print(len(context))") if reps.loads else None
        if check is not None and check.stdout.strip() != str(len(payload)):
            raise RuntimeError(f"context check failed: {check.stdout!r} {check.stderr!r}")
    finally:
        if link.trace is not None:
            link.trace.done = True
        if env is not None:
            env.close()
        if provider is not None:
            provider.close()
    return finish(samples, meta, traced)


def finish(
    samples: dict[str, list[float]], meta: dict[str, Any], traced: list[str]
) -> list[dict[str, Any]]:
    """The sample records of one variant."""
    records = []
    for metric, values in samples.items():
        if not values:
            continue
        extra = {"bytes": CONTEXT_MIB * MIB} if metric.startswith("context") else {}
        records.append(
            {"name": "wan", "unit": "s", "values": values, "metric": metric, **meta, **extra}
        )
    if traced:
        records.append({"name": "wan-trace", "unit": "", "values": [], "lines": traced, **meta})
    return records


# -- rlms 0.1.3, computed ---------------------------------------------------------------------

RLMS_POLL = 0.1
"""``time.sleep(0.1)`` between polls: rlm/environments/modal_repl.py:394 (prime_repl.py:461,
daytona_repl.py:566, e2b_repl.py:391)."""
RLMS_REQUEST_RTT = 3.0
"""Round trips of one ``requests.get``/``requests.post`` to the broker's tunnel: TCP
handshake 1 + TLS 1.3 handshake 1 + the request 1. ``requests.get(...)`` (module function)
opens a new ``Session`` and so a new connection every call (requests/api.py:70)."""
RLMS_POLL_PERIOD_RTT = RLMS_REQUEST_RTT + RLMS_POLL / RTT
"""One idle poll cycle: a GET, then the 0.1 s sleep."""
RLMS_SUBCALL_RTT = RLMS_POLL_PERIOD_RTT / 2 + 0.5 + (RLMS_REQUEST_RTT - 0.5)
"""An isolated sub-call: on average half a poll cycle until a GET /pending reaches the
broker after the call was enqueued, half an RTT for the answer to reach the host, then the
POST /respond's two handshakes and half an RTT for it to reach the broker, which releases
the cell's local POST /enqueue (the LM itself is instant)."""
RLMS_SUBCALL_MIN_RTT = 0.5 + (RLMS_REQUEST_RTT - 0.5)
RLMS_SUBCALL_MAX_RTT = RLMS_POLL_PERIOD_RTT + RLMS_SUBCALL_MIN_RTT
RLMS_BACK_TO_BACK_RTT = 0.5 + RLMS_POLL / RTT + RLMS_REQUEST_RTT - 0.5 + RLMS_SUBCALL_MIN_RTT
"""Each of several sequential sub-calls: the next call is enqueued when the previous POST
reaches the broker; the poller still waits for that POST's answer (0.5), sleeps 0.1 s,
and its next GET reaches the broker 2.5 RTT after it starts; then 3 RTT as above."""

RLMS_NOTE = f"""\
rlms 0.1.3's cloud environments (`modal`, `prime`, `daytona`, `e2b`) cannot run here (no
account); its row is **computed** from its source, not measured. A cell's `llm_query` POSTs
to a Flask broker inside the sandbox (`rlm/environments/modal_repl.py:143-156`), which holds
the request until the host answers (`modal_repl.py:53-76`); the host's poller thread GETs
`/pending` through the provider's HTTPS tunnel, answers each request with a POST `/respond`,
and sleeps {RLMS_POLL:g} s between polls (`modal_repl.py:364-394`; the same loop in
`prime_repl.py:431-461`, `daytona_repl.py:534-566`, `e2b_repl.py:361-391`). Each
`requests.get`/`requests.post` there is the module-level function, which opens a new
`Session`, so a new TCP and TLS connection, per call (`requests/api.py:70`): with TLS 1.3,
{RLMS_REQUEST_RTT:g} RTT per request (TCP 1 + TLS 1 + HTTP 1). So one idle poll cycle is
{RLMS_REQUEST_RTT:g} RTT + {RLMS_POLL:g} s = {RLMS_POLL_PERIOD_RTT:g} RTT, and one sub-call
costs two requests over the link (the GET that finds it, the POST that answers it): on
average half a cycle until a GET reaches the broker, 0.5 RTT for the list to reach the host,
2.5 RTT for the POST to reach the broker = **{RLMS_SUBCALL_RTT:g} RTT** (from
{RLMS_SUBCALL_MIN_RTT:g} to {RLMS_SUBCALL_MAX_RTT:g}); back-to-back calls in one cell are
phase-locked to the poller's sleep and cost **{RLMS_BACK_TO_BACK_RTT:g} RTT** each. A batch
is one request (`modal_repl.py:159-172`), so the same {RLMS_SUBCALL_RTT:g} RTT. This is the
sub-call alone, on top of rlms's cell (a new `sandbox.exec("python", "-c", script)` per cell,
`modal_repl.py:455-456`, whose cost is the provider's), and TLS 1.2 would add 1 RTT per
request (7 RTT a sub-call). rlms's session start includes a fixed `time.sleep(2)` (40 RTT;
`modal_repl.py:351`; 3 s in `daytona_repl.py:510`)."""


# -- the report ---------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_rtt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / RTT:.2f}"


def fmt_cell(record: dict[str, Any] | None) -> str:
    """A cell's median in RTT, with its p90 when that is over 1.3x the median (a run in
    several takes a round trip more)."""
    if record is None or not record["values"]:
        return "—"
    values = sorted(record["values"])
    mid = statistics.median(values)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    text = fmt_rtt(mid)
    return text + (f" (p90 {fmt_rtt(p90)})" if p90 > 1.3 * mid else "")


def fmt_mbs(record: dict[str, Any] | None) -> str:
    if record is None or not record["values"]:
        return "—"
    return f"{record['bytes'] / 1e6 / statistics.median(record['values']):.0f}"


def find(records: list[dict[str, Any]], variant: str, metric: str) -> dict[str, Any] | None:
    for record in records:
        if record["name"] == "wan" and record["variant"] == variant and record["metric"] == metric:
            return record
    return None


def value(records: list[dict[str, Any]], variant: str, metric: str) -> float | None:
    record = find(records, variant, metric)
    return median(record["values"]) if record is not None else None


TARGETS = {"start": 9.6, "cell": 1.1, "subcall": 2.1, "batch": 2.2, "beyond": 3.0}
TARGET_MBS = 70.0


def render(records: list[dict[str, Any]], *, trace: bool = True, fold: bool = False) -> str:
    """The WAN table (markdown), its targets and notes; with ``trace``, what crossed the
    link in the traced runs (``fold``: in a ``<details>`` block)."""
    names = [v for v in VARIANTS if find(records, v, "start") is not None]
    n: dict[str, int] = {}
    for metric in ("start", "cell", "context-first", "context"):
        for name in names:
            record = find(records, name, metric)
            if record is not None:
                n.setdefault(metric.replace("context-first", "first"), len(record["values"]))
    lines = [
        f"The bridge through a link that delays every byte {DELAY * 1e3:g} ms each way "
        f"(RTT {RTT * 1e3:g} ms), the agent as a local process (`LoopbackLauncher`). Times "
        f"in round trips of the link (time / {RTT * 1e3:g} ms), medians (session start: "
        f"{n.get('start', '?')} starts; cells: {n.get('cell', '?')} runs each, with the p90 "
        f"where it is over 1.3x the median; context: the first load of {n.get('first', '?')} "
        f"connections, and {n.get('context', '?')} later loads on one). Plaintext and pinned "
        "session TLS (`tls=True`).",
        "",
        "| carrier | TLS | session start | agent's own start | beyond it | cell `x = 1` "
        f"| cell, one `llm_query` | cell, {BATCH}-prompt `llm_query_batched` "
        f"| {CONTEXT_MIB} MiB context, MB/s: first load / later |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        spec = VARIANTS[name]
        cells = [fmt_rtt(value(records, name, m)) for m in ("start", "agent", "beyond")]
        cells += [fmt_cell(find(records, name, m)) for m in CELLS]
        first, later = (fmt_mbs(find(records, name, m)) for m in ("context-first", "context"))
        cells.append("—" if first == later == "—" else f"{first} / {later}")
        tls = "session" if spec.tls else "off"
        lines.append(f"| {spec.label} | {tls} | " + " | ".join(cells) + " |")
    lines.append(
        "| rlms 0.1.3 cloud envs (**computed**, see below) | HTTPS | — | — | — | — "
        f"| cell + {RLMS_SUBCALL_RTT:g} ({RLMS_SUBCALL_MIN_RTT:g} to {RLMS_SUBCALL_MAX_RTT:g}; "
        f"back to back {RLMS_BACK_TO_BACK_RTT:g}) | cell + {RLMS_SUBCALL_RTT:g} | — |"
    )
    lines.append(
        f"| target (`dial`) | | ~{TARGETS['start']:g} | | <= {TARGETS['beyond']:g} "
        f"| {TARGETS['cell']:g} | {TARGETS['subcall']:g} | {TARGETS['batch']:g} "
        f"| ~{TARGET_MBS:g} |"
    )
    lines += ["", *target_lines(records, names), "", *notes()]
    traces = [r for r in records if r["name"] == "wan-trace"]
    if trace and traces:
        lines += [
            "",
            "What crossed the link during one traced session start and one run of each "
            "cell, per variant: each line is a flight (bytes entering the link in one "
            f"direction, each within {FLIGHT_GAP * 1e3:g} ms of the last), its time, its "
            "size and what it carried (HTTP/2 frames; TLS records, opaque after the "
            "hellos; relay frames `OPEN`, `DATA[...]`, `CLOSE` with their `#stream`). With "
            "the TCP handshake modelled, a connection's first bytes are shown when they "
            "were written, and cross 1.5 RTT after the `connect`.",
        ]
        if fold:
            lines += ["", "<details><summary>the traces</summary>"]
        for record in traces:
            lines += ["", f"`{record['variant']}`:", "", "```", *record["lines"], "```"]
        if fold:
            lines += ["", "</details>"]
    return "\n".join(lines)


def notes() -> list[str]:
    """How the WAN numbers are made."""
    return [
        "* **Link.** `dial` and `reverse`: a loopback TCP proxy (`bench/wan.py` "
        f"`DelayProxy`) whose every chunk read is written out {DELAY * 1e3:g} ms later, each "
        "direction with its own reader and writer threads (a delay line: throughput is "
        "kept). A loopback `connect` completes at once, so TCP's three-way handshake is "
        'not in these rows; the rows "TCP handshake modelled" (session start only) add it: '
        "the connecting side's first byte arrives 1.5 RTT after its `connect`, the other "
        "side's 2 RTT, as on a real link. `stdio` has no TCP connection of its own (a "
        "provider's exec stream is open already): its pipes are wrapped (`DelayedStream`) so "
        f"that each `send` and each chunk of output is delivered {DELAY * 1e3:g} ms later, "
        'in order, without holding the sender; "blocking writes": `send` also returns '
        "only one RTT after it was called, as a provider's stdin write over its API does.",
        "* **Cloud plugins through their fakes** (`modal`, `e2b`, `daytona`, `prime`): the "
        "link sits between the unmodified SDK and the plugin's wire-level fake "
        "(`MODAL_SERVER_URL`, `E2B_API_URL`/`E2B_SANDBOX_URL`, `DAYTONA_API_URL`, "
        "`PRIME_API_BASE_URL` point at a `DelayProxy`; Daytona's toolbox and Prime's "
        "gateway are reached through it too), so each SDK call (app "
        "lookup, image, create, upload, exec, every stdin write, the stdout stream) pays the "
        "link as it would to the real service; the sandboxes are local isolated processes. "
        "Their **agent's own start** column is until the SDK's exec call returned (create + "
        "ship + exec, the launcher's `timings`), **beyond it** the rest: the agent's "
        "interpreter start and the handshake over the relay.",
        "* **Agent's own start**: from `env.start` until the agent printed its ready line "
        "(`dial`, `reverse`: the launcher read it on the process's own stdout, undelayed, "
        "and returned; `stdio`: its chunk left the process, before the link's delay). "
        "**Beyond it**: the rest of `env.start`, what the link costs. The agent gets its "
        "secrets on its own stdin (undelayed) for `dial` and `reverse`, through the link "
        "for `stdio`; on `reverse` it prints its ready line before it dials the host.",
        f"* **Cells** are `env.execute` on the host: `{CELLS['cell']}`, "
        f"`{CELLS['subcall']}`, `{CELLS['batch']}`, the host answering sub-calls at once. "
        f"**Context**: `env.load_context` of a {CONTEXT_MIB} MiB `str` (streamed: no shared "
        "directory): the first load on a new connection (gRPC's flow-control window starts "
        "small and grows with its BDP estimate; right after the start, or after the cells "
        "on the last connection) and the later loads on that last connection.",
        "* **rlms (computed).** " + RLMS_NOTE.replace("\n", " "),
    ]


def target_lines(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Which targets are met: the absolute ones on ``dial``, ``stdio`` and ``reverse``
    within 10% of ``dial`` (each with the same TLS setting), and the start beyond the
    agent's own within 3 RTT."""
    out = ["| target | measured | met |", "| --- | --- | --- |"]

    def row(what: str, measured: str, ok: bool | None) -> None:
        met = {True: "**met**", False: "**missed**", None: "not measured"}[ok]
        out.append(f"| {what} | {measured} | {met} |")

    def compare(name: str, base: str, what: str) -> None:
        misses = []
        for metric in ("start", *CELLS):
            ours, theirs = value(records, name, metric), value(records, base, metric)
            if ours is not None and theirs and ours > 1.1 * theirs:
                misses.append(f"{metric} {ours / theirs:.2f}x")
        ours_mbs, base_mbs = (
            fmt_mbs(find(records, name, "context-first")),
            fmt_mbs(find(records, base, "context-first")),
        )
        if "—" not in (ours_mbs, base_mbs) and float(ours_mbs) < float(base_mbs) / 1.1:
            misses.append(f"first context load {float(ours_mbs) / float(base_mbs):.2f}x")
        beyond = value(records, name, "beyond")
        if beyond is not None and beyond / RTT > TARGETS["beyond"]:
            misses.append(f"beyond {beyond / RTT:.2f} RTT")
        row(what, "; ".join(misses) or "all within", not misses)

    for tls in (False, True):
        tls_name = "TLS" if tls else "plaintext"
        dial = variant_name(Variant("dial", tls=tls))
        if dial in names:
            for metric, what in (
                ("start", "session start ~{} RTT"),
                ("beyond", "start beyond the agent's own <= {} RTT"),
                ("cell", "cell ~{} RTT"),
                ("subcall", "one sub-call ~{} RTT"),
                ("batch", "64-batch ~{} RTT"),
            ):
                goal = TARGETS[metric]
                got = value(records, dial, metric)
                limit = goal * (1.0 if metric == "beyond" else 1.1)
                ok = None if got is None else got / RTT <= limit
                row(f"dial, {tls_name}: {what.format(goal)}", fmt_rtt(got), ok)
            mbs = fmt_mbs(find(records, dial, "context-first"))
            ok = None if mbs == "—" else float(mbs) >= 0.9 * TARGET_MBS
            what = f"dial, {tls_name}: {CONTEXT_MIB} MiB at ~{TARGET_MBS:g} MB/s (first load)"
            row(what, mbs, ok)
            for name in names:
                spec = VARIANTS[name]
                if spec.carrier != "dial" and spec.tls == tls and not spec.handshake:
                    what = f"{spec.label}, {tls_name}: within 10% of dial, beyond <= 3 RTT"
                    compare(name, dial, what)
        dial = variant_name(Variant("dial", tls=tls, handshake=True))
        if dial in names:
            beyond = value(records, dial, "beyond")
            ok = None if beyond is None else beyond / RTT <= TARGETS["beyond"]
            row(f"dial, TCP handshake modelled, {tls_name}: beyond <= 3 RTT", fmt_rtt(beyond), ok)
            for other in (Variant("reverse", tls=tls, handshake=True), Variant("stdio", tls=tls)):
                name = variant_name(other)
                if name in names:
                    what = (
                        f"{other.label}, {tls_name}: start within 10% of dial with its TCP "
                        "handshake, beyond <= 3 RTT"
                    )
                    compare(name, dial, what)
    return out


# -- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", nargs="?", default="wan", choices=["wan"])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="measure only this variant (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--starts", type=int, default=None, help="session starts per variant")
    parser.add_argument("--cells", type=int, default=None, help="timed runs of each cell")
    parser.add_argument("--loads", type=int, default=None, help="context loads after the first")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="name and show what crosses the link in one session start and one run of each cell",
    )
    parser.add_argument("--emit", action="store_true", help="print JSON samples (bench/run.py)")
    args = parser.parse_args(argv)
    reps = Reps.quick() if args.quick else Reps()
    for name in ("starts", "cells", "loads"):
        if getattr(args, name) is not None:
            setattr(reps, name, getattr(args, name))
    variants = args.variant or list(VARIANTS)
    if args.emit:
        import rlm_core

        emit_info(python=sys.version.split()[0], library_version=rlm_core.__version__)
    records: list[dict[str, Any]] = []
    started = now()
    for variant in variants:
        begun = now()
        found = measure(variant, reps, trace=args.trace)
        print(f"[wan] {variant}: {now() - begun:.1f}s", file=sys.stderr)
        for record in found:
            if args.emit:
                fields = dict(record)
                emit(fields.pop("name"), fields.pop("unit"), fields.pop("values"), **fields)
        records += found
    if not args.emit:
        print(render(records, trace=args.trace))
        print(f"\n({now() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
