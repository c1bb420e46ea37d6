"""Remote environments: an agent plus a launcher.

:class:`AgentEnvironment` does everything a sandbox provider needs except starting the
sandbox: it talks to the agent over the gRPC bridge, serves the sub-LM and tool calls the
agent sends, loads contexts as streams, enforces cell timeouts, notices a dead agent at once
and restarts one whose cell ignored its interrupt. A provider plugin subclasses it and
implements :meth:`AgentEnvironment.make_launcher`, returning a :class:`Launcher` that starts
the agent and hands back an :class:`~rlm_core.bridge.client.Endpoint`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from secrets import token_hex
from typing import Any, ClassVar, cast

import grpc

from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core.agent import codec
from rlm_core.bridge.client import AgentClient, Endpoint, check_fork_safety
from rlm_core.bridge.tls import TLSMaterial, make_tls_material, new_token
from rlm_core.environments.base import (
    COMPACTION,
    FILES,
    PERSISTENT,
    RECURSIVE,
    RESERVED_NAMES,
    SUBCALLS,
    TIMEOUT,
    Environment,
    Session,
)
from rlm_core.exceptions import (
    ConfigurationError,
    ContextError,
    ProtocolMismatchError,
    SandboxCrashedError,
    SandboxError,
    SandboxRestartedError,
)
from rlm_core.threads import DaemonThreadPool
from rlm_core.types import REPLResult, RLMChatCompletion, locals_from_wire

log = logging.getLogger(__name__)

_REPLAYED = re.compile(r"^history(_\d+)?$")

SHARED_FILE_MIN_BYTES = 4 * 1024 * 1024
"""Contexts at least this large go through the launcher's shared directory when it has one."""


@dataclass(frozen=True)
class AgentSecrets:
    """What an agent needs to authenticate its host: the token and optional TLS material.

    Launchers deliver :meth:`to_json` to the agent through stdin or a file that the agent
    deletes, never through the command line or the environment of other processes.
    """

    token: str
    tls: TLSMaterial | None = None

    def to_json(self) -> str:
        """One JSON line for ``python -m rlm_core.agent --secrets-stdin``."""
        data = {"token": self.token}
        if self.tls is not None:
            data["tls_cert"] = self.tls.certificate.decode()
            data["tls_key"] = self.tls.private_key.decode()
        return json.dumps(data)

    def __repr__(self) -> str:
        return f"AgentSecrets(token=<hidden>, tls={self.tls is not None})"


class Launcher(ABC):
    """Starts one agent and stops it: the only provider-specific part of an environment."""

    @abstractmethod
    def launch(self, secrets: AgentSecrets, heartbeat_timeout: float) -> Endpoint:
        """Start the sandbox and the agent in it; return where to reach the agent."""

    @abstractmethod
    def terminate(self) -> None:
        """Stop the agent and the sandbox. Safe to call twice or before :meth:`launch`."""

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status once it has ended (``-N``: killed by signal N), waiting
        up to ``wait`` seconds; ``None`` while it runs or when the provider cannot tell."""
        return None

    def diagnostics(self) -> str:
        """The last lines the agent wrote to its stderr, when the provider has them."""
        return ""

    def shared_dir(self) -> str | None:
        """A private directory that both the host and the agent (``--shared-dir``) can use,
        for sandboxes on the host's own machine; large contexts then travel as a file
        instead of as streamed chunks. ``None`` (the default) for remote sandboxes."""
        return None


def _describe_status(status: int | None) -> str:
    if status is None:
        return "exit status unknown"
    if status < 0:
        import signal

        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exit status {status}"


class AgentEnvironment(Environment):
    """Everything a remote environment needs except launching the sandbox.

    ``environment_kwargs``:

    * ``cell_timeout``: seconds a cell may run before it is interrupted (state is kept);
      a cell that ignores the interrupt for ``interrupt_grace`` more seconds gets the agent
      killed and started again (:class:`SandboxRestartedError`, state lost).
    * ``tls``: encrypt the connection with a per-session certificate the host pins.
    * ``heartbeat_interval`` / ``heartbeat_timeout``: the agent exits once the host has
      been silent for ``heartbeat_timeout`` seconds.
    * ``startup_timeout``: seconds to wait for the agent to accept a connection.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset(
        {TIMEOUT, PERSISTENT, SUBCALLS, RECURSIVE, COMPACTION, FILES}
    )

    def __init__(
        self,
        cell_timeout: float | None = None,
        tls: bool = False,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 30.0,
        startup_timeout: float = 60.0,
        interrupt_grace: float = 3.0,
        max_dispatch_threads: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cell_timeout", cell_timeout, above=0, hint="None means no timeout")
        self.check_range("heartbeat_interval", heartbeat_interval, above=0)
        self.check_range("heartbeat_timeout", heartbeat_timeout, above=0)
        self.check_range("startup_timeout", startup_timeout, above=0)
        self.check_range("interrupt_grace", interrupt_grace, at_least=0)
        self.check_range("max_dispatch_threads", max_dispatch_threads, at_least=1)
        if heartbeat_interval >= heartbeat_timeout:
            raise ConfigurationError(
                f"the {self.name or type(self).__name__!r} environment's heartbeat_interval "
                f"({heartbeat_interval:g}) must be less than its heartbeat_timeout "
                f"({heartbeat_timeout:g}), or the agent takes the host for gone between "
                "two heartbeats"
            )
        self.cell_timeout = cell_timeout
        self.tls = tls
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.startup_timeout = startup_timeout
        self.interrupt_grace = interrupt_grace
        self._max_dispatch_threads = max_dispatch_threads
        self._session: Session | None = None
        self._launcher: Launcher | None = None
        self._client: AgentClient | None = None
        self._pool: DaemonThreadPool | None = None
        self._host_tools: dict[str, Callable[..., Any]] = {}
        self._contexts: dict[int, Any] = {}
        self._replay: dict[str, Any] = {}
        self._calls: list[RLMChatCompletion] = []
        self._calls_lock = threading.Lock()
        self.agent_info: pb.HandshakeResponse | None = None

    @abstractmethod
    def make_launcher(self) -> Launcher:
        """A launcher for one agent of this environment."""

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, session: Session) -> None:
        """Launch the agent (first call) and serve ``session``'s sub-calls."""
        self._session = session
        if self._client is None:
            self._boot()

    def rebind(self, session: Session) -> None:
        """Serve a new session's sub-calls; the agent and its state stay."""
        self._session = session

    def _boot(self) -> None:
        check_fork_safety()  # before anything is started
        session = self._require_session()
        launcher = self.make_launcher()
        secrets = AgentSecrets(new_token(), make_tls_material() if self.tls else None)
        client: AgentClient | None = None
        try:
            endpoint = launcher.launch(secrets, self.heartbeat_timeout)
            if self.tls and endpoint.server_certificate is None:
                assert secrets.tls is not None
                endpoint = Endpoint(endpoint.target, endpoint.token, secrets.tls.certificate)
            client = AgentClient(endpoint)
            client.wait_ready(self.startup_timeout)
            tools, self._host_tools = self._tool_messages(session)
            self.agent_info = client.handshake(
                session.depth, tools, self.heartbeat_timeout, timeout=self.startup_timeout
            )
            self._pool = DaemonThreadPool(
                max_workers=self._max_dispatch_threads, thread_name_prefix="rlm-bridge-call"
            )
            client.open_subcalls(self._dispatch, self.heartbeat_interval)
        except BaseException as exc:
            if client is not None:
                client.close(timeout=0.5)
            status = launcher.exit_status(wait=0.5)
            launcher.terminate()
            if isinstance(exc, ProtocolMismatchError | KeyboardInterrupt):
                raise
            detail = launcher.diagnostics()
            raise SandboxError(
                f"could not start the {self.name} agent: {type(exc).__name__}: {exc}"
                + (f" ({_describe_status(status)})" if status is not None else "")
                + (f"\nagent stderr:\n{detail}" if detail else "")
            ) from exc
        self._launcher, self._client = launcher, client

    def close(self) -> None:
        """End the session and stop the sandbox."""
        client, self._client = self._client, None
        launcher, self._launcher = self._launcher, None
        pool, self._pool = self._pool, None
        if launcher is not None:
            # Stopping the sandbox ends the session; no need to ask the agent first.
            launcher.terminate()
        if client is not None:
            client.close(send_close=launcher is None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _restart(self) -> None:
        """Replace a wedged agent with a fresh one and reload the contexts."""
        client, self._client = self._client, None
        launcher, self._launcher = self._launcher, None
        if launcher is not None:
            launcher.terminate()
        if client is not None:
            client.close(timeout=0.2)
        self._boot()
        for index, payload in sorted(self._contexts.items()):
            self.load_context(payload, index)
        for name, value in self._replay.items():
            self.set_variable(name, value)

    # -- sub-calls from the agent -------------------------------------------------------

    def _tool_messages(self, session: Session) -> tuple[list[pb.Tool], dict[str, Any]]:
        messages, host_tools = [], {}
        for tool in session.custom_tools:
            value = tool.value
            if tool.source is not None:
                messages.append(pb.Tool(name=tool.name, source=codec.text(tool.source)))
            elif callable(value):
                host_tools[tool.name] = value
                messages.append(pb.Tool(name=tool.name, host_callable=True))
            else:
                try:
                    data = codec.dumps(value)
                except (TypeError, ValueError) as exc:
                    raise SandboxError(
                        f"custom tool {tool.name!r} is neither callable nor JSON-compatible "
                        f"({type(value).__name__}), so it cannot be sent to the sandbox"
                    ) from exc
                messages.append(pb.Tool(name=tool.name, json_value=data))
        return messages, host_tools

    def _dispatch(self, request: pb.SubcallRequest) -> None:
        pool = self._pool
        if pool is None:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            pool.submit(self._serve, request)

    def _serve(self, request: pb.SubcallRequest) -> None:
        client = self._client
        response = pb.SubcallResponse(id=request.id)
        try:
            if request.kind == pb.SUBCALL_KIND_TOOL:
                response.result = self._call_tool(request)
            else:
                completions = self._call_lm(request)
                with self._calls_lock:
                    self._calls.extend(completions)
                response.completions.extend(codec.completion_to_bytes(c) for c in completions)
        except BaseException as exc:  # SystemExit from a tool must not leave the cell waiting
            response.error = codec.text(str(exc))
            response.error_type = codec.text(type(exc).__name__)
        finally:
            if client is not None:
                client.respond(response)

    def _call_lm(self, request: pb.SubcallRequest) -> list[RLMChatCompletion]:
        subcalls = self._require_session().subcalls
        prompts = [codec.loads(p) for p in request.prompts]
        model = request.model if request.has_model else None
        kind = request.kind
        if kind == pb.SUBCALL_KIND_LLM_QUERY:
            return [subcalls.llm_query(prompts[0], model)]
        if kind == pb.SUBCALL_KIND_LLM_QUERY_BATCHED:
            return subcalls.llm_query_batched(prompts, model)
        if kind == pb.SUBCALL_KIND_RLM_QUERY:
            return [subcalls.rlm_query(prompts[0], model)]
        if kind == pb.SUBCALL_KIND_RLM_QUERY_BATCHED:
            return subcalls.rlm_query_batched(prompts, model)
        raise ValueError(f"unknown sub-call kind {kind}")

    def _call_tool(self, request: pb.SubcallRequest) -> bytes:
        fn = self._host_tools.get(request.tool)
        if fn is None:
            raise KeyError(f"no host tool named {request.tool!r}")
        arguments = codec.loads(request.arguments) or {}
        result = fn(*arguments.get("args", []), **arguments.get("kwargs", {}))
        try:
            return codec.dumps(result)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"tool {request.tool!r} returned a {type(result).__name__}, which is not "
                "JSON-compatible"
            ) from exc

    # -- the contract -------------------------------------------------------------------

    def _require_session(self) -> Session:
        if self._session is None:
            raise SandboxError(f"the {self.name} environment is not started")
        return self._session

    def _require_client(self) -> AgentClient:
        if self._client is None:
            raise SandboxError(f"the {self.name} environment is not started (or closed)")
        return self._client

    def _failure(self, exc: grpc.RpcError, doing: str) -> SandboxError:
        """Turn a failed call into the right typed error."""
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
            self._client is not None and self._client.stream_error
        ):
            launcher = self._launcher
            status = launcher.exit_status(wait=2.0) if launcher is not None else None
            if status is not None or code == grpc.StatusCode.UNAVAILABLE:
                detail = launcher.diagnostics() if launcher is not None else ""
                return SandboxCrashedError(
                    f"the {self.name} agent died while {doing} ({_describe_status(status)})"
                    + (f"\nagent stderr:\n{detail}" if detail else ""),
                    status,
                )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return SandboxError(f"{doing}: {exc.details()}")
        return SandboxError(f"{doing} failed: {code.name}: {exc.details()}")

    def load_context(self, payload: Any, index: int) -> None:
        """Stream ``payload`` to the agent in chunks (never as source text)."""
        client = self._require_client()
        try:
            encoded = codec.encode_context_lazily(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ContextError(f"context {index}: {exc}") from exc
        shared = self._launcher.shared_dir() if self._launcher is not None else None
        if shared is not None and encoded.total_bytes >= SHARED_FILE_MIN_BYTES:
            self._load_context_file(client, shared, index, encoded)
            self._contexts[index] = payload
            return
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
            client.stub.LoadContext(chunks(), metadata=client.metadata)
        except grpc.RpcError as exc:
            raise self._failure(exc, f"loading context {index}") from None
        self._contexts[index] = payload

    def _load_context_file(
        self, client: AgentClient, shared: str, index: int, encoded: codec.EncodedContext
    ) -> None:
        """Same-host shortcut: write the payload into the shared directory, announce it."""
        name = f"context-{index}-{token_hex(8)}.bin"
        path = os.path.join(shared, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in encoded.pieces():
                    f.write(piece)
            chunk = pb.ContextChunk(
                index=index,
                kind=cast(pb.ContextKind, encoded.kind),
                total_bytes=encoded.total_bytes,
                path=name,
            )
            client.stub.LoadContext(iter([chunk]), metadata=client.metadata)
        except grpc.RpcError as exc:
            raise self._failure(exc, f"loading context {index}") from None
        finally:
            with contextlib.suppress(OSError):  # the agent deletes it once read
                os.unlink(path)

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        """Run a cell in the agent; interrupt it after the timeout (state kept); if it
        ignores the interrupt, restart the agent and raise :class:`SandboxRestartedError`."""
        client = self._require_client()
        limits = [t for t in (timeout, self.cell_timeout) if t is not None and t > 0]
        cell_timeout = min(limits) if limits else 0.0
        rpc_deadline = cell_timeout + self.interrupt_grace if cell_timeout else None
        with self._calls_lock:
            self._calls = []
        try:
            response = client.stub.Execute(
                pb.ExecuteRequest(code=codec.text(code), timeout=cell_timeout),
                metadata=client.metadata,
                timeout=rpc_deadline,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._restart()
                raise SandboxRestartedError(
                    f"the cell ran past its {cell_timeout:g}s timeout and ignored the "
                    f"interrupt for {self.interrupt_grace:g}s more, so the {self.name} "
                    "sandbox was restarted: all variables were lost (the contexts were "
                    "loaded again)"
                ) from None
            raise self._failure(exc, "running a cell") from None
        with self._calls_lock:
            calls, self._calls = self._calls, []
        return REPLResult(
            stdout=response.stdout,
            stderr=response.stderr,
            locals=locals_from_wire(response.locals),
            execution_time=response.execution_time,
            rlm_calls=calls,
            final_answer=response.final_answer if response.has_final_answer else None,
            error=response.error or None,
        )

    def get_variable(self, name: str) -> Any:
        """A JSON copy of the variable, or its ``repr`` string when it is not JSON-able."""
        client = self._require_client()
        try:
            value = client.stub.GetVariable(
                pb.GetVariableRequest(name=codec.text(name)), metadata=client.metadata
            )
        except grpc.RpcError as exc:
            raise self._failure(exc, f"reading {name!r}") from None
        if not value.found:
            raise KeyError(name)
        return codec.loads(value.json) if value.json else value.repr

    def _set(self, name: str, value: Any, extend: bool) -> None:
        client = self._require_client()
        try:
            data = codec.dumps(value)
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"{name!r}: only JSON-compatible values can be sent: {exc}") from exc
        codec.check_size(f"the value of {name!r}", len(data))
        try:
            client.stub.SetVariable(
                pb.SetVariableRequest(name=codec.text(name), json=data, extend=extend),
                metadata=client.metadata,
            )
        except grpc.RpcError as exc:
            raise self._failure(exc, f"setting {name!r}") from None

    def set_variable(self, name: str, value: Any) -> None:
        """Send a JSON-compatible value into the namespace."""
        self._set(name, value, extend=False)
        if name in RESERVED_NAMES or _REPLAYED.match(name):
            self._replay[name] = value

    def extend_variable(self, name: str, items: list[Any]) -> None:
        """Append items to a list variable, sending only the new items."""
        self._set(name, items, extend=True)
        kept = self._replay.get(name)
        if isinstance(kept, list):
            kept.extend(items)
