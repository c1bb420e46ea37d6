"""The host's end of the bridge: a connection to one agent, owning every RPC.

:class:`AgentClient` opens a gRPC channel over a carrier (see
:mod:`rlm_core.bridge.carriers`), authenticates every call with the session token, checks
the protocol version and keeps the ``Subcalls`` stream open: requests the agent sends on it
are handed to a dispatcher, answers and heartbeats go back on the same stream. Every RPC
goes through a method here, which maps gRPC status codes to typed errors, so nothing above
the bridge sees gRPC or the generated protocol classes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc

from rlm_core import __version__, interrupts
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, codec
from rlm_core.bridge.carriers import Dial
from rlm_core.bridge.results import AgentGoneError, AgentInfo, CellDeadlineError
from rlm_core.bridge.tls import TLS_SERVER_NAME, auth_metadata
from rlm_core.exceptions import (
    ForkedHostError,
    ProtocolMismatchError,
    SandboxError,
)
from rlm_core.types import REPLResult, locals_from_wire

log = logging.getLogger(__name__)

Dispatcher = Callable[[pb.SubcallRequest], pb.SubcallResponse]


@dataclass(frozen=True)
class Endpoint:
    """How to reach an agent, as launchers written for the first launcher contract
    return it: a gRPC target, the session token and, for TLS, the pinned certificate of
    the agent (``None`` for plaintext over a private route). New launchers return a
    :class:`~rlm_core.bridge.carriers.Dial` instead."""

    target: str
    token: str
    server_certificate: bytes | None = None
    server_name: str = TLS_SERVER_NAME

    def __repr__(self) -> str:  # never show the token
        tls = "tls" if self.server_certificate else "plaintext"
        return f"Endpoint(target={self.target!r}, {tls})"

    def to_dial(self) -> Dial:
        """The same route as a :class:`~rlm_core.bridge.carriers.Dial`."""
        if self.server_certificate is None:  # the environment's tls setting decides
            return Dial(self.target)
        return Dial(
            self.target,
            tls="session",
            server_certificate=self.server_certificate,
            server_name=self.server_name,
        )


_grpc_pid: int | None = None
"""The process that opened the first connection: gRPC's threads and locks are its own."""

_clients: weakref.WeakSet[AgentClient] = weakref.WeakSet()


def check_fork_safety() -> None:
    """Raise :class:`ForkedHostError` in a process forked from one that had already used
    gRPC. Such a child can hang forever inside gRPC (its locks may have been held by a
    thread of the parent that the fork did not copy), so it must not use gRPC at all."""
    if _grpc_pid is not None and _grpc_pid != os.getpid():
        raise ForkedHostError(
            f"this process ({os.getpid()}) was forked from process {_grpc_pid} after that "
            "one had used gRPC, which cannot be used safely after such a fork: start worker "
            "processes with multiprocessing's 'spawn' or 'forkserver' start method (e.g. "
            "multiprocessing.get_context('spawn')), or fork them before the first "
            "completion; environment='local' works in a forked process"
        )


def _leave_inherited_clients_alone() -> None:
    """In a forked child: the parent's connections are never closed nor finalised here
    (either would call into gRPC); they are kept alive until the process ends."""
    import ctypes

    for client in list(_clients):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(client))


os.register_at_fork(after_in_child=_leave_inherited_clients_alone)


def _is_grpc_helper(thread: threading.Thread) -> bool:
    """Whether ``thread`` is one of the daemon threads gRPC's Python layer runs for a
    channel's calls (its target comes from ``grpc._cython``; ``Thread._target`` is kept
    by CPython until the thread ends)."""
    target = getattr(thread, "_target", None)
    return thread.daemon and str(getattr(target, "__module__", "")).startswith("grpc")


def _close_all_at_exit() -> None:
    """At interpreter exit: close every connection still open and let gRPC's helper threads
    finish. A daemon thread frozen by the interpreter's shutdown while it holds a call's
    lock would make that call's finaliser wait for ever, and the process with it."""
    for client in list(_clients):
        if client._owner == os.getpid():
            client.close(timeout=0.5, send_close=False)
    deadline = time.monotonic() + 2.0
    for thread in threading.enumerate():
        if _is_grpc_helper(thread):
            thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(_close_all_at_exit)


CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]


class AgentClient:
    """One authenticated connection to an agent.

    ``route`` is where to dial: a :class:`~rlm_core.bridge.carriers.Dial` (a relay carrier
    hands its private ``unix:`` target as one) or, for old callers, an :class:`Endpoint`.
    ``token`` is the session token (taken from an ``Endpoint`` when not given).
    ``session_certificate`` is the session's own certificate, pinned for ``tls="session"``
    routes that name no certificate of their own.
    """

    def __init__(
        self,
        route: Dial | Endpoint,
        token: str | None = None,
        *,
        session_certificate: bytes | None = None,
    ) -> None:
        global _grpc_pid
        check_fork_safety()
        if _grpc_pid is None:
            _grpc_pid = os.getpid()
        self._owner = os.getpid()
        _clients.add(self)
        if isinstance(route, Endpoint):
            token = route.token if token is None else token
            self.endpoint = route
            route = route.to_dial()
        else:
            pinned = route.server_certificate
            if route.tls in (None, "session") and pinned is None:
                pinned = session_certificate
            self.endpoint = Endpoint(route.target, token or "", pinned)
        if token is None:
            raise ValueError("AgentClient needs the session token")
        self.route = route
        self.channel = _open_channel(route, session_certificate)
        self.stub = pb_grpc.AgentStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = auth_metadata(token) + tuple(route.metadata.items())
        self._outbox: queue.Queue[pb.HostMessage | None] = queue.Queue()
        self._stream: Any = None
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        self.stream_error: str | None = None
        self.last_heard = time.monotonic()

    # -- session ------------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Block until the channel connects (``SandboxError`` after ``timeout`` s)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise SandboxError(
                f"the agent at {self.route.target} did not accept a connection within {timeout:g}s"
            ) from exc

    def begin(
        self,
        depth: int,
        tools: list[pb.Tool],
        heartbeat_timeout: float,
        heartbeat_interval: float,
        dispatch: Callable[[pb.SubcallRequest], None],
        timeout: float,
    ) -> AgentInfo:
        """Start the session in as few round trips as the link allows: the handshake goes
        out as soon as the channel connects (no separate wait), and the ``Subcalls``
        stream opens beside it. Raises :class:`ProtocolMismatchError` on a version
        mismatch and :class:`SandboxError` when the agent cannot be reached in time."""
        request = _handshake_request(depth, tools, heartbeat_timeout)
        future = self.stub.Handshake.future(
            request, metadata=self.metadata, timeout=timeout, wait_for_ready=True
        )
        self.open_subcalls(dispatch, heartbeat_interval)
        try:
            response = future.result()
        except grpc.RpcError as exc:
            raise self._handshake_error(exc, timeout) from None
        return self._check_handshake(response)

    def handshake(
        self, depth: int, tools: list[pb.Tool], heartbeat_timeout: float, timeout: float
    ) -> AgentInfo:
        """Check versions and send the session settings (one round trip)."""
        request = _handshake_request(depth, tools, heartbeat_timeout)
        try:
            response = self.stub.Handshake(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._handshake_error(exc, timeout) from None
        return self._check_handshake(response)

    def _handshake_error(self, exc: grpc.RpcError, timeout: float) -> SandboxError:
        code = exc.code()
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return ProtocolMismatchError(exc.details())
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return SandboxError(
                f"the agent at {self.route.target} did not answer within {timeout:g}s"
            )
        return SandboxError(f"the handshake failed: {code.name}: {exc.details()}")

    @staticmethod
    def _check_handshake(response: pb.HandshakeResponse) -> AgentInfo:
        if response.protocol_version != PROTOCOL_VERSION:
            raise ProtocolMismatchError(
                f"protocol version mismatch: host speaks {PROTOCOL_VERSION}, agent "
                f"{response.agent_version} speaks {response.protocol_version}"
            )
        return AgentInfo(
            protocol_version=response.protocol_version,
            agent_version=response.agent_version,
            capabilities=tuple(response.capabilities),
            pid=response.pid,
            python_version=response.python_version,
        )

    def open_subcalls(
        self, dispatch: Callable[[pb.SubcallRequest], None], heartbeat_interval: float
    ) -> None:
        """Open the ``Subcalls`` stream; each request the agent sends goes to ``dispatch``
        (which must not block: it answers later through :meth:`respond`)."""

        def outgoing() -> Iterator[pb.HostMessage]:
            while True:
                message = self._outbox.get()
                if message is None:
                    return
                yield message

        self._stream = self.stub.Subcalls(outgoing(), metadata=self.metadata, wait_for_ready=True)

        def read() -> None:
            try:
                for message in self._stream:
                    self.last_heard = time.monotonic()
                    if message.WhichOneof("message") == "request":
                        dispatch(message.request)
            except grpc.RpcError as exc:
                if not self._closed.is_set():
                    self.stream_error = f"{exc.code().name}: {exc.details()}"
            finally:
                if self.stream_error is None and not self._closed.is_set():
                    self.stream_error = "the agent closed the sub-call stream"

        def beat() -> None:
            while not self._closed.wait(heartbeat_interval):
                self._outbox.put(pb.HostMessage(heartbeat=pb.Heartbeat(sent_at=time.time())))

        self._reader = threading.Thread(target=read, name="rlm-bridge-reader", daemon=True)
        self._reader.start()
        threading.Thread(target=beat, name="rlm-bridge-heartbeat", daemon=True).start()

    def respond(self, response: pb.SubcallResponse) -> None:
        """Send an answer to a sub-call request."""
        if response.ByteSize() > MAX_MESSAGE_BYTES - 4096:
            response = pb.SubcallResponse(
                id=response.id,
                error=str(codec.MessageTooLargeError("the sub-call answer", response.ByteSize())),
                error_type="MessageTooLargeError",
            )
        self._outbox.put(pb.HostMessage(response=response))

    # -- the calls ----------------------------------------------------------------------

    def _failure(self, exc: grpc.RpcError, doing: str) -> SandboxError:
        """The typed error for a failed call."""
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or self.stream_error:
            return AgentGoneError(
                doing,
                f"{code.name}: {exc.details()}",
                unreachable=code == grpc.StatusCode.UNAVAILABLE,
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return SandboxError(f"{doing}: {exc.details()}")
        return SandboxError(f"{doing} failed: {code.name}: {exc.details()}")

    def load_context(self, encoded: codec.EncodedContext, index: int) -> None:
        """Stream an encoded context to the agent in chunks."""
        header = pb.ContextChunk(
            index=index, kind=cast(pb.ContextKind, encoded.kind), total_bytes=encoded.total_bytes
        )

        def chunks() -> Iterator[pb.ContextChunk]:
            for i, piece in enumerate(encoded.pieces()):
                data = piece if isinstance(piece, bytes) else bytes(piece)
                if i == 0:
                    header.data = data
                    yield header
                else:
                    yield pb.ContextChunk(data=data)

        try:
            self.stub.LoadContext(chunks(), metadata=self.metadata)
        except grpc.RpcError as exc:
            raise self._failure(exc, f"loading context {index}") from None

    def load_context_file(self, name: str, encoded: codec.EncodedContext, index: int) -> None:
        """Announce a context the host wrote as ``name`` in the shared directory."""
        chunk = pb.ContextChunk(
            index=index,
            kind=cast(pb.ContextKind, encoded.kind),
            total_bytes=encoded.total_bytes,
            path=name,
        )
        try:
            self.stub.LoadContext(iter([chunk]), metadata=self.metadata)
        except grpc.RpcError as exc:
            raise self._failure(exc, f"loading context {index}") from None

    def execute(self, code: str, cell_timeout: float, deadline: float | None) -> REPLResult:
        """Run a cell. ``cell_timeout`` (0: none) is the agent's interrupt; ``deadline``
        (seconds, or ``None``) bounds the call itself: past it, :class:`CellDeadlineError`.

        A Ctrl+C recorded (:mod:`rlm_core.interrupts`) before the call is raised instead of
        sending the cell; one pressed during it ends the wait as any ``KeyboardInterrupt``
        does (gRPC's blocking wait runs signal handlers every 0.2 s)."""
        interrupts.check()
        try:
            response = self.stub.Execute(
                pb.ExecuteRequest(code=codec.text(code), timeout=cell_timeout),
                metadata=self.metadata,
                timeout=deadline,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CellDeadlineError("the cell ignored its interrupt") from None
            raise self._failure(exc, "running a cell") from None
        return REPLResult(
            stdout=response.stdout,
            stderr=response.stderr,
            locals=locals_from_wire(response.locals),
            execution_time=response.execution_time,
            final_answer=response.final_answer if response.has_final_answer else None,
            error=response.error or None,
        )

    def get_variable(self, name: str) -> Any:
        """A JSON copy of the variable, or its ``repr`` string when it is not JSON-able;
        ``KeyError`` when it does not exist."""
        try:
            value = self.stub.GetVariable(
                pb.GetVariableRequest(name=codec.text(name)), metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise self._failure(exc, f"reading {name!r}") from None
        if not value.found:
            raise KeyError(name)
        return codec.loads(value.json) if value.json else value.repr

    def set_variable(self, name: str, value: Any, *, extend: bool = False) -> None:
        """Send a JSON-compatible value (``extend``: append its items to a list)."""
        try:
            data = codec.dumps(value)
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"{name!r}: only JSON-compatible values can be sent: {exc}") from exc
        codec.check_size(f"the value of {name!r}", len(data))
        try:
            self.stub.SetVariable(
                pb.SetVariableRequest(name=codec.text(name), json=data, extend=extend),
                metadata=self.metadata,
            )
        except grpc.RpcError as exc:
            raise self._failure(exc, f"setting {name!r}") from None

    def close(self, timeout: float = 2.0, *, send_close: bool = True) -> None:
        """Ask the agent to end the session (unless ``send_close`` is false, when the
        sandbox is being stopped anyway), then drop the connection. In a forked copy of
        the host it does nothing: the connection is the parent's."""
        if self._closed.is_set() or os.getpid() != self._owner:
            return
        self._closed.set()
        if send_close:
            with contextlib.suppress(grpc.RpcError):
                self.stub.Close(pb.CloseRequest(), metadata=self.metadata, timeout=timeout)
        self._outbox.put(None)
        if self._stream is not None:
            self._stream.cancel()
        self.channel.close()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)  # out of gRPC's code before the caller goes on (or exits)


def _handshake_request(
    depth: int, tools: list[pb.Tool], heartbeat_timeout: float
) -> pb.HandshakeRequest:
    return pb.HandshakeRequest(
        protocol_version=PROTOCOL_VERSION,
        host_version=__version__,
        depth=depth,
        tools=tools,
        heartbeat_timeout=heartbeat_timeout,
    )


def _open_channel(route: Dial, session_certificate: bytes | None) -> grpc.Channel:
    """A channel for ``route``: plaintext, pinned session TLS or public-CA TLS."""
    options = list(CHANNEL_OPTIONS)
    if route.authority:
        options.append(("grpc.default_authority", route.authority))
    mode = route.tls or ("session" if session_certificate or route.server_certificate else "none")
    if mode == "none":
        return grpc.insecure_channel(route.target, options=options)
    if mode == "public":
        if route.server_name:
            options.append(("grpc.ssl_target_name_override", route.server_name))
        return grpc.secure_channel(route.target, grpc.ssl_channel_credentials(), options=options)
    certificate = route.server_certificate or session_certificate
    if certificate is None:
        raise SandboxError(
            f"{route!r} asks for the session's TLS, but the session has no certificate "
            "(set the environment's tls=True)"
        )
    options.append(("grpc.ssl_target_name_override", route.server_name or TLS_SERVER_NAME))
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate)
    return grpc.secure_channel(route.target, credentials, options=options)
