"""The agent: serves the protocol inside a sandbox and runs cells in a persistent namespace.

Needs only the standard library, grpcio and protobuf. Cells run in the process's main
thread, so a cell that exceeds its timeout can be interrupted with a signal (which also
breaks ``time.sleep`` and blocking waits); gRPC calls are served by worker threads. Sub-LM
calls and host tool calls from a cell go to the host as requests on the ``Subcalls`` stream
the host opened; each call blocks only its caller, and a batched call sends all its prompts
in one request. The agent exits when the host has been silent longer than the heartbeat
timeout, so a sandbox never outlives its host.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import mmap
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, cast

import grpc

from rlm_core import __version__
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core._proto.rlm.v1 import agent_pb2_grpc as pb_grpc
from rlm_core.agent import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, codec
from rlm_core.agent.auth import TokenInterceptor
from rlm_core.repl import REPLNamespace
from rlm_core.types import REPLResult, RLMChatCompletion, UsageSummary, locals_to_wire
from rlm_core.vocabulary import SubcallHandler, ToolSpec

log = logging.getLogger("rlm_core.agent")

CAPABILITIES = ("subcalls", "recursive", "timeout", "persistent", "compaction", "files")
"""What every agent can do; launchers add what their sandbox guarantees."""


class CellTimeout(BaseException):
    """Raised in a running cell when it exceeds its timeout.

    A ``BaseException`` so that ``except Exception`` in the cell does not swallow it.
    """

    __module__ = "builtins"  # shown to the model as plain ``CellTimeout``


class HostToolError(Exception):
    """A host-side tool raised; the message names the host exception."""

    __module__ = "builtins"  # shown to the model as plain ``HostToolError``


def _after_reply(context: Any, release: Callable[[], object]) -> None:
    """Run ``release`` once the call's reply is sent (at once if the call is over)."""
    if not context.add_callback(release):
        release()


def _error_completion(prompt: Any, model: str | None, message: str) -> RLMChatCompletion:
    return RLMChatCompletion(
        root_model=model or "unknown",
        prompt=prompt,
        response=f"Error: {message}",
        usage_summary=UsageSummary(),
        execution_time=0.0,
        error=message,
    )


@dataclass
class _Pending:
    event: threading.Event
    response: pb.SubcallResponse | None = None
    error: str | None = None


class HostLink:
    """The agent's end of the ``Subcalls`` stream: a :class:`SubcallHandler` whose calls
    become requests to the host."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._outbox: queue.Queue[pb.AgentMessage | None] | None = None
        self.last_heard = time.monotonic()

    # -- stream plumbing ----------------------------------------------------------------

    def attach(self) -> queue.Queue[pb.AgentMessage | None]:
        """A new stream opened: route requests to it (an older one is dropped)."""
        outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        with self._lock:
            old, self._outbox = self._outbox, outbox
        if old is not None:
            old.put(None)
        self.last_heard = time.monotonic()
        return outbox

    def detach(self, outbox: queue.Queue[pb.AgentMessage | None], reason: str) -> None:
        """The stream ended: fail every call still waiting on it."""
        with self._lock:
            if self._outbox is outbox:
                self._outbox = None
            pending, self._pending = self._pending, {}
        for item in pending.values():
            item.error = reason
            item.event.set()

    def deliver(self, message: pb.HostMessage) -> None:
        """Handle one message from the host."""
        self.last_heard = time.monotonic()
        if message.WhichOneof("message") == "heartbeat":
            with self._lock:
                outbox = self._outbox
            if outbox is not None:  # echo, so the host can tell the agent is alive
                outbox.put(pb.AgentMessage(heartbeat=pb.Heartbeat(sent_at=time.time())))
            return
        with self._lock:
            item = self._pending.pop(message.response.id, None)
        if item is not None:
            item.response = message.response
            item.event.set()

    def _request(self, request: pb.SubcallRequest) -> pb.SubcallResponse:
        size = request.ByteSize()
        codec.check_size("the sub-call request", size)
        item = _Pending(threading.Event())
        with self._lock:
            outbox = self._outbox
            if outbox is None:
                raise ConnectionError("the host is not connected")
            request.id = next(self._ids)
            self._pending[request.id] = item
        outbox.put(pb.AgentMessage(request=request))
        item.event.wait()
        if item.response is None:
            raise ConnectionError(item.error or "the host connection closed")
        return item.response

    # -- SubcallHandler -----------------------------------------------------------------

    def _lm(
        self, kind: pb.SubcallKind, prompts: list[Any], model: str | None
    ) -> list[RLMChatCompletion]:
        try:
            request = pb.SubcallRequest(
                kind=kind,
                prompts=[codec.dumps(p) for p in prompts],
                model=codec.text(model or ""),
                has_model=model is not None,
            )
            response = self._request(request)
        except (TypeError, ValueError, ConnectionError) as exc:
            message = f"LM query failed - {type(exc).__name__}: {exc}"
            return [_error_completion(p, model, message) for p in prompts]
        if response.error:
            return [_error_completion(p, model, response.error) for p in prompts]
        return [codec.completion_from_bytes(c) for c in response.completions]

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._lm(pb.SUBCALL_KIND_LLM_QUERY, [prompt], model)[0]

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return self._lm(pb.SUBCALL_KIND_LLM_QUERY_BATCHED, prompts, model) if prompts else []

    def rlm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._lm(pb.SUBCALL_KIND_RLM_QUERY, [prompt], model)[0]

    def rlm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return self._lm(pb.SUBCALL_KIND_RLM_QUERY_BATCHED, prompts, model) if prompts else []

    def tool_stub(self, name: str) -> Callable[..., Any]:
        """A function that calls the host tool ``name`` and returns its (JSON) result."""

        def call_host_tool(*args: Any, **kwargs: Any) -> Any:
            try:
                arguments = codec.dumps({"args": list(args), "kwargs": kwargs})
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"arguments of tool {name!r} must be JSON-compatible: {exc}"
                ) from exc
            response = self._request(
                pb.SubcallRequest(
                    kind=pb.SUBCALL_KIND_TOOL, tool=codec.text(name), arguments=arguments
                )
            )
            if response.error:
                raise HostToolError(f"{response.error_type}: {response.error} (host tool {name!r})")
            return codec.loads(response.result)

        call_host_tool.__name__ = name
        call_host_tool.__qualname__ = name
        return call_host_tool


@dataclass
class _Cell:
    code: str
    timeout: float
    done: threading.Event
    result: Any = None


NamespaceFactory = Callable[[SubcallHandler], REPLNamespace]
"""Makes the namespace cells run in, bound to the agent's sub-call handler."""


def load_namespace_factory(spec: str | None) -> NamespaceFactory:
    """The namespace factory named by ``spec`` (``"package.module:name"``, e.g. a
    :class:`REPLNamespace` subclass that runs cells another way); :class:`REPLNamespace`
    itself when ``spec`` is empty. The module is imported only here, so the agent needs
    nothing beyond grpcio and protobuf unless it is asked for more. ``ValueError`` when
    ``spec`` is malformed or names nothing importable."""
    if not spec:
        return REPLNamespace
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--repl wants MODULE:NAME, not {spec!r}")
    import importlib

    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--repl {spec}: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"--repl {spec}: {type(factory).__name__} is not callable")
    return cast(NamespaceFactory, factory)


class AgentServicer(pb_grpc.AgentServicer):
    """Implements the ``Agent`` service over one :class:`REPLNamespace` (or the namespace
    ``namespace`` makes)."""

    def __init__(
        self,
        shutdown: Callable[[str], None],
        heartbeat_timeout: float,
        shared_dir: str | None = None,
        namespace: NamespaceFactory = REPLNamespace,
    ) -> None:
        self.shared_dir = shared_dir
        self.link = HostLink()
        self.repl = namespace(self.link)
        self._shutdown = shutdown
        self.heartbeat_timeout = heartbeat_timeout
        self.cells: queue.Queue[_Cell | None] = queue.Queue()
        self._cell_lock = threading.Lock()
        self.running: _Cell | None = None

    # -- handshake and session ----------------------------------------------------------

    def Handshake(self, request: pb.HandshakeRequest, context: grpc.ServicerContext) -> Any:
        if request.protocol_version != PROTOCOL_VERSION:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version mismatch: host speaks {request.protocol_version}, "
                f"agent {__version__} speaks {PROTOCOL_VERSION}",
            )
        if request.heartbeat_timeout > 0:
            self.heartbeat_timeout = request.heartbeat_timeout
        tools = []
        for tool in request.tools:
            kind = tool.WhichOneof("kind")
            if kind == "host_callable":
                tools.append(ToolSpec(tool.name, self.link.tool_stub(tool.name)))
            elif kind == "json_value":
                tools.append(ToolSpec(tool.name, codec.loads(tool.json_value)))
            elif kind == "source":
                tools.append(ToolSpec(tool.name, {"source": tool.source}))
        try:
            self.repl.install_tools(tools)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.link.last_heard = time.monotonic()
        return pb.HandshakeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_version=__version__,
            capabilities=list(CAPABILITIES),
            pid=os.getpid(),
            python_version=sys.version.split()[0],
        )

    def Close(self, request: pb.CloseRequest, context: grpc.ServicerContext) -> Any:
        self._shutdown("the host closed the session")
        return pb.CloseResponse()

    def Subcalls(self, request_iterator: Iterator[pb.HostMessage], context: Any) -> Any:
        outbox = self.link.attach()

        def read() -> None:
            reason = "the host closed the sub-call stream"
            try:
                for message in request_iterator:
                    self.link.deliver(message)
            except grpc.RpcError as exc:
                reason = f"the sub-call stream broke: {exc.code().name}"
            except Exception as exc:  # a stream torn down mid-read
                reason = f"the sub-call stream broke: {exc}"
            finally:
                self.link.detach(outbox, reason)
                outbox.put(None)

        threading.Thread(target=read, name="rlm-agent-stream-reader", daemon=True).start()
        while True:
            message = outbox.get()
            if message is None or not context.is_active():
                return
            yield message

    # -- contexts and variables ---------------------------------------------------------

    def LoadContext(self, request_iterator: Iterator[pb.ContextChunk], context: Any) -> Any:
        buffer = bytearray()
        index, kind, total, received = 0, 0, 0, 0
        value: Any = None
        for i, chunk in enumerate(request_iterator):
            if i == 0:
                index, kind, total = chunk.index, int(chunk.kind), int(chunk.total_bytes)
                if chunk.path:
                    value = self._decode_shared_file(chunk.path, kind, total, index, context)
                    received = total
                    continue
                buffer = bytearray(total)  # filled in place: no regrowing, no extra copy
            end = received + len(chunk.data)
            if end > total:
                context.abort(
                    grpc.StatusCode.DATA_LOSS,
                    f"context {index}: more than the announced {total:,} bytes arrived",
                )
            buffer[received:end] = chunk.data
            received = end
        if received != total:
            context.abort(
                grpc.StatusCode.DATA_LOSS,
                f"context {index}: received {received:,} of {total:,} bytes",
            )
        if value is None:
            value = self._decode(kind, buffer, index, context)
        del buffer
        names = [f"context_{index}", "context"] if index == 0 else [f"context_{index}"]
        replaced = [self.repl.ns.get(name) for name in names]
        self.repl.load_context(value, index)
        _after_reply(context, replaced.clear)  # a replaced big context is freed off the clock
        return pb.LoadContextResponse(
            received_bytes=total,
            type_name=type(value).__name__,
            length=len(value) if hasattr(value, "__len__") else 0,
        )

    @staticmethod
    def _decode(kind: int, data: bytearray | mmap.mmap, index: int, context: Any) -> Any:
        try:
            return codec.decode_context(kind, data)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"context {index}: {exc}")

    def _decode_shared_file(
        self, name: str, kind: int, total: int, index: int, context: Any
    ) -> Any:
        """Decode a payload file the host left in the shared directory, straight from a
        memory map of it (no intermediate copy), and delete it."""
        shared = self.shared_dir
        path = os.path.realpath(os.path.join(shared or "", name))
        if shared is None or os.path.dirname(path) != os.path.realpath(shared):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"context {index}: payload files are only read from the shared directory",
            )
        try:
            with open(path, "rb") as f:
                os.unlink(path)
                size = os.fstat(f.fileno()).st_size
                if size != total:
                    context.abort(
                        grpc.StatusCode.DATA_LOSS,
                        f"context {index}: received {size:,} of {total:,} bytes",
                    )
                if size == 0:
                    return self._decode(kind, bytearray(), index, context)
                view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                value = self._decode(kind, view, index, context)
            except BaseException:
                view.close()
                raise
            _after_reply(context, view.close)  # unmapping 50 MiB takes milliseconds
            return value
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            context.abort(grpc.StatusCode.DATA_LOSS, f"context {index}: {exc}")

    def GetVariable(self, request: pb.GetVariableRequest, context: Any) -> Any:
        try:
            value = self.repl.get(request.name)
        except KeyError:
            return pb.Value(found=False)
        type_name = type(value).__name__
        try:
            data = codec.dumps(value)
        except (TypeError, ValueError):
            return pb.Value(
                found=True,
                repr=codec.text(repr(value)[:1_000_000]),
                type_name=codec.text(type_name),
            )
        try:
            codec.check_size(f"variable {request.name!r}", len(data))
        except codec.MessageTooLargeError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return pb.Value(found=True, json=data, type_name=codec.text(type_name))

    def SetVariable(self, request: pb.SetVariableRequest, context: Any) -> Any:
        value = codec.loads(request.json)
        if request.extend:
            try:
                target = self.repl.get(request.name)
                target.extend(value)
            except (KeyError, AttributeError, TypeError) as exc:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"cannot extend {request.name!r}: {type(exc).__name__}: {exc}",
                )
            self.repl.set(request.name, target)
        else:
            self.repl.set(request.name, value)
        return pb.SetVariableResponse()

    # -- cells --------------------------------------------------------------------------

    def Execute(self, request: pb.ExecuteRequest, context: Any) -> Any:
        cell = _Cell(request.code, request.timeout, threading.Event())
        with self._cell_lock:  # one cell at a time, in arrival order
            self.cells.put(cell)
            cell.done.wait()
        result, timed_out = cell.result
        text = codec.text  # protobuf strings must be valid UTF-8: a cell's may not be
        response = pb.ExecuteResponse(
            stdout=text(result.stdout),
            stderr=text(result.stderr),
            error=text(result.error or ""),
            execution_time=result.execution_time,
            has_final_answer=result.final_answer is not None,
            final_answer=text(result.final_answer or ""),
            locals={text(k): text(v) for k, v in locals_to_wire(result.locals).items()},
            timed_out=timed_out,
        )
        size = response.ByteSize()
        if size > MAX_MESSAGE_BYTES - 4096 and response.locals:  # very many long variables
            response.ClearField("locals")
            size = response.ByteSize()
        if size > MAX_MESSAGE_BYTES - 4096:  # a huge final answer: report it as the error
            error = f"MessageTooLargeError: {codec.MessageTooLargeError('the cell result', size)}"
            stderr = result.stderr
            if stderr and not stderr.endswith("\n"):
                stderr += "\n"
            response = pb.ExecuteResponse(
                stdout=text(result.stdout),
                stderr=text(f"{stderr}{error}\n"),
                error=error,
                execution_time=result.execution_time,
                timed_out=timed_out,
            )
        return response

    def run_cells_forever(self, stop: threading.Event) -> None:
        """Run queued cells in the calling (main) thread until ``stop`` is set.

        Whatever a cell does, every cell gets a result: a failure of the loop's own
        bookkeeping is reported as that cell's error, and the loop goes on.
        """

        def on_timeout_signal(signum: int, frame: Any) -> None:
            # Only while the cell's own code runs: never inside the REPL's bookkeeping.
            if self.running is not None and self.repl.executing:
                raise CellTimeout(f"the cell exceeded its {self.running.timeout:g}s timeout")

        while not stop.is_set():
            try:
                cell = self.cells.get(timeout=0.2)
            except queue.Empty:
                continue
            if cell is None:
                return
            fired = threading.Event()
            try:
                # A previous cell may have ignored, blocked or replaced the interrupt.
                signal.signal(signal.SIGUSR1, on_timeout_signal)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
                result = self._run_cell(cell, fired)
            except BaseException as exc:
                message = f"{type(exc).__name__}: the agent could not run the cell: {exc}"
                result = REPLResult(stderr=message + "\n", error=message)
            cell.result = (result, fired.is_set())
            cell.done.set()

    def _run_cell(self, cell: _Cell, fired: threading.Event) -> REPLResult:
        """Run one cell with its timer armed; the interrupt raises :class:`CellTimeout`."""
        main = threading.main_thread()
        timer: threading.Timer | None = None
        if cell.timeout > 0:

            def interrupt() -> None:
                fired.set()
                signal.pthread_kill(main.ident or 0, signal.SIGUSR1)

            timer = threading.Timer(cell.timeout, interrupt)
            timer.daemon = True
        self.running = cell
        result: REPLResult | None = None
        try:
            try:
                if timer is not None:
                    timer.start()
                result = self.repl.run(cell.code, reraise_interrupt=False)
            finally:
                self.running = None
                if timer is not None:
                    timer.cancel()
        except CellTimeout as exc:  # the signal landed just outside the cell's code
            if result is None:
                message = f"CellTimeout: {exc}"
                result = REPLResult(stderr=message, error=message)
        assert result is not None
        return result


def _read_secrets(args: Any) -> dict[str, Any]:
    if args.secrets_stdin:
        carrier = getattr(args, "carrier_fds", None)
        if carrier is not None:  # exactly one line: the frames that follow are the relay's
            from rlm_core.agent.relay import read_line

            line = read_line(carrier[0])
        else:
            line = sys.stdin.readline()
        return dict(json.loads(line)) if line.strip() else {}
    if args.secrets_file:
        with open(args.secrets_file, encoding="utf-8") as f:
            secrets_ = dict(json.load(f))
        os.unlink(args.secrets_file)
        return secrets_
    token = os.environ.pop("RLM_AGENT_TOKEN", "")
    return {"token": token} if token else {}


def serve(args: Any) -> int:
    """Run the agent until the host closes the session or goes silent."""
    logging.basicConfig(level=logging.INFO, format="rlm-agent %(levelname)s %(message)s")
    secrets_ = _read_secrets(args)
    token = secrets_.get("token")
    if not token:
        print(
            "rlm-agent: no session token (use --secrets-stdin, --secrets-file or RLM_AGENT_TOKEN)",
            file=sys.stderr,
        )
        return 2
    carrier = _carrier(args)
    relay_dir: str | None = None
    if carrier is not None and args.listen is None:  # a private socket only the relay uses
        import tempfile

        # Inside the shared directory when there is one: the supervisor and the launcher
        # remove that even when the agent is killed before its own clean-up.
        base = args.shared_dir or tempfile.gettempdir()
        if len(base) > 60 and os.path.isdir("/tmp"):
            base = "/tmp"  # a Unix socket's path is limited to about 100 bytes
        relay_dir = tempfile.mkdtemp(prefix="rlm-agent-", dir=base)
        args.listen = f"unix:{os.path.join(relay_dir, 'agent.sock')}"
    stop = threading.Event()
    reason: list[str] = []

    def shutdown(why: str) -> None:
        if not stop.is_set():
            reason.append(why)
            stop.set()
            servicer.cells.put(None)

    try:
        namespace = load_namespace_factory(getattr(args, "repl", None))
        servicer = AgentServicer(shutdown, args.heartbeat_timeout, args.shared_dir, namespace)
    except Exception as exc:  # a --repl that cannot be loaded or built
        print(f"rlm-agent: cannot make the REPL namespace: {exc}", file=sys.stderr)
        return 2
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="rlm-agent"),
        interceptors=[TokenInterceptor(token, lambda m: log.warning("rejected a call to %s", m))],
        options=options,
        maximum_concurrent_rpcs=None,
    )
    pb_grpc.add_AgentServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    if secrets_.get("tls_cert") and secrets_.get("tls_key"):
        credentials = grpc.ssl_server_credentials(
            [(secrets_["tls_key"].encode(), secrets_["tls_cert"].encode())]
        )
        port = server.add_secure_port(args.listen, credentials)
    else:
        port = server.add_insecure_port(args.listen)
    if port == 0 and not args.listen.startswith("unix:"):
        print(f"rlm-agent: cannot listen on {args.listen}", file=sys.stderr)
        return 2
    if carrier is not None:  # loaded before the ready line: the host waits on what follows
        import rlm_core.agent.relay  # noqa: F401
    server.start()
    ready_line = f"RLM-AGENT-READY port={port} pid={os.getpid()}"
    if carrier is not None:
        ready_line = (
            f"RLM-AGENT-READY port=0 pid={os.getpid()} carrier={carrier} framing={args.framing}"
        )
    if carrier != "stdio":  # on the stdio carrier it goes on the carrier, first
        print(ready_line, flush=True)

    def clean_up() -> None:
        for directory in (args.shared_dir, relay_dir):  # private directories: ours to remove
            if directory:
                import shutil  # only on the way out: it is slow to import

                shutil.rmtree(directory, ignore_errors=True)

    exit_signal: list[int] = []

    def stop_within(grace: float, why: str) -> None:
        """Stop, and if a cell keeps the main thread busy past ``grace``, exit anyway."""
        shutdown(why)
        if not finished.wait(grace):
            log.info("shutting down: %s (a cell was still running)", why)
            clean_up()
            _exit_as(exit_signal[0] if exit_signal else None)

    def terminated(signum: int, frame: Any) -> None:
        # Whoever sent it (a cell included), it is a request to end, reported as such; the
        # launcher's death is the supervisor's business (see agent_supervisor).
        exit_signal.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the agent at once
        why = f"terminated by {signal.Signals(signum).name}"
        threading.Thread(target=stop_within, args=(1.0, why), daemon=True).start()

    finished = threading.Event()
    signal.signal(signal.SIGTERM, terminated)

    def watchdog() -> None:
        last_tick = time.monotonic()
        while not stop.wait(0.25):
            now = time.monotonic()
            if now - last_tick > 1.0:
                # This thread was starved (a cell held the GIL), and so was the stream reader:
                # the host's heartbeats are queued, not missing. Start counting afresh.
                servicer.link.last_heard = max(servicer.link.last_heard, now)
            last_tick = now
            silent = now - servicer.link.last_heard
            if silent > servicer.heartbeat_timeout:
                stop_within(2.0, f"no word from the host for {silent:.1f}s")
                return

    threading.Thread(target=watchdog, name="rlm-agent-watchdog", daemon=True).start()
    relay = None
    if carrier is not None:
        from rlm_core.agent.relay import open_carrier

        def carrier_ended(why: str) -> None:  # from a relay thread: never block it
            threading.Thread(target=stop_within, args=(2.0, why), daemon=True).start()

        try:
            relay = open_carrier(
                stdio=args.carrier_fds,
                dial=args.dial,
                token=token,
                server_path=args.listen.removeprefix("unix:"),
                framing=args.framing,
                ready_line=ready_line,
                on_end=carrier_ended,
            )
        except OSError as exc:
            print(f"rlm-agent: cannot open the {carrier} carrier: {exc}", file=sys.stderr)
            stop.set()
            server.stop(grace=None)
            clean_up()
            return 2
    try:
        servicer.run_cells_forever(stop)
    except KeyboardInterrupt:
        shutdown("interrupted")
    except BaseException as exc:  # never serve heartbeats with no one to run cells
        shutdown(f"the cell loop failed: {type(exc).__name__}: {exc}")
    log.info("shutting down: %s", reason[0] if reason else "stopped")
    stopped = server.stop(grace=0.5)
    if relay is not None:  # let the last answers (to Close, say) through the carrier
        stopped.wait(1.0)
        relay.close(drain=0.5)
    clean_up()
    finished.set()
    if exit_signal:
        _exit_as(exit_signal[0])
    return 0


def _carrier(args: Any) -> str | None:
    """The relay carrier the agent serves over: ``"stdio"``, ``"reverse"`` or ``None``."""
    if getattr(args, "stdio", False):
        return "stdio"
    if getattr(args, "dial", None):
        return "reverse"
    return None


def _exit_as(signum: int | None) -> None:
    """Exit at once, by ``signum`` with its default action when given (so the launcher
    sees the signal as the exit status), else with status 0."""
    if signum is not None:
        with contextlib.suppress(ValueError):  # outside the main thread: already default
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
    os._exit(0)
