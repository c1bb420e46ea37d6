"""The host's end of the bridge: a connection to one agent.

:class:`AgentClient` dials the agent, authenticates every call with the session token,
checks the protocol version, and keeps the ``Subcalls`` stream open: requests the agent
sends on it are handed to a dispatcher, answers and heartbeats go back on the same stream.
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
from typing import Any

import grpc

from rlm_core import __version__
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, codec
from rlm_core.bridge.tls import TLS_SERVER_NAME, auth_metadata
from rlm_core.exceptions import ForkedHostError, ProtocolMismatchError, SandboxError

log = logging.getLogger(__name__)

Dispatcher = Callable[[pb.SubcallRequest], pb.SubcallResponse]


@dataclass(frozen=True)
class Endpoint:
    """How to reach an agent: a gRPC target, the session token and, for TLS, the pinned
    certificate of the agent (``None`` for plaintext over a private route)."""

    target: str
    token: str
    server_certificate: bytes | None = None
    server_name: str = TLS_SERVER_NAME

    def __repr__(self) -> str:  # never show the token
        tls = "tls" if self.server_certificate else "plaintext"
        return f"Endpoint(target={self.target!r}, {tls})"


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
    """One authenticated connection to an agent."""

    def __init__(self, endpoint: Endpoint) -> None:
        global _grpc_pid
        check_fork_safety()
        if _grpc_pid is None:
            _grpc_pid = os.getpid()
        self._owner = os.getpid()
        _clients.add(self)
        self.endpoint = endpoint
        options = list(CHANNEL_OPTIONS)
        if endpoint.server_certificate is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=endpoint.server_certificate
            )
            options.append(("grpc.ssl_target_name_override", endpoint.server_name))
            self.channel = grpc.secure_channel(endpoint.target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(endpoint.target, options=options)
        self.stub = pb_grpc.AgentStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = auth_metadata(endpoint.token)
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
                f"the agent at {self.endpoint.target} did not accept a connection "
                f"within {timeout:g}s"
            ) from exc

    def handshake(
        self, depth: int, tools: list[pb.Tool], heartbeat_timeout: float, timeout: float
    ) -> pb.HandshakeResponse:
        """Check versions and send the session settings."""
        request = pb.HandshakeRequest(
            protocol_version=PROTOCOL_VERSION,
            host_version=__version__,
            depth=depth,
            tools=tools,
            heartbeat_timeout=heartbeat_timeout,
        )
        try:
            response: pb.HandshakeResponse = self.stub.Handshake(
                request, metadata=self.metadata, timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise ProtocolMismatchError(exc.details()) from None
            raise
        if response.protocol_version != PROTOCOL_VERSION:
            raise ProtocolMismatchError(
                f"protocol version mismatch: host speaks {PROTOCOL_VERSION}, agent "
                f"{response.agent_version} speaks {response.protocol_version}"
            )
        return response

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

        self._stream = self.stub.Subcalls(outgoing(), metadata=self.metadata)

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
