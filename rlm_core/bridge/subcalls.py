"""The host's sub-call server: answers the sub-LM and tool calls an agent sends.

Requests arrive on the ``Subcalls`` stream (read by :class:`~rlm_core.bridge.client.AgentClient`)
and are served on a pool of threads, so many calls from a batched cell run at once; each
answer goes back on the same stream. The completions served during a cell are kept for that
cell's result.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core.agent import codec
from rlm_core.exceptions import SandboxError
from rlm_core.threads import DaemonThreadPool
from rlm_core.types import RLMChatCompletion
from rlm_core.vocabulary import SubcallHandler, ToolSpec

Respond = Callable[[pb.SubcallResponse], None]


class SubcallServer:
    """Serves one agent's sub-calls with the current session's handler."""

    def __init__(self, max_threads: int) -> None:
        self._max_threads = max_threads
        self._pool: DaemonThreadPool | None = None
        self._handler: SubcallHandler | None = None
        self._respond: Respond | None = None
        self._host_tools: dict[str, Callable[..., Any]] = {}
        self._calls: list[RLMChatCompletion] = []
        self._lock = threading.Lock()

    def bind(self, handler: SubcallHandler) -> None:
        """Answer later calls with ``handler`` (a new session of the same agent)."""
        self._handler = handler

    def tool_messages(self, tools: list[ToolSpec]) -> list[pb.Tool]:
        """The handshake's tool list; callables stay on the host and are served here."""
        messages, host_tools = [], {}
        for tool in tools:
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
        self._host_tools = host_tools
        return messages

    def start(self, respond: Respond) -> None:
        """Serve calls from now on, sending answers through ``respond``."""
        self._respond = respond
        if self._pool is None:
            self._pool = DaemonThreadPool(
                max_workers=self._max_threads, thread_name_prefix="rlm-bridge-call"
            )

    def dispatch(self, request: pb.SubcallRequest) -> None:
        """Queue one request (called by the stream reader; never blocks)."""
        pool = self._pool
        if pool is None:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            pool.submit(self._serve, request)

    def take_calls(self) -> list[RLMChatCompletion]:
        """The completions served since the last call (the running cell's sub-calls)."""
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def close(self) -> None:
        """Stop serving; calls still queued are dropped."""
        pool, self._pool = self._pool, None
        self._respond = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- serving ------------------------------------------------------------------------

    def _serve(self, request: pb.SubcallRequest) -> None:
        respond = self._respond
        response = pb.SubcallResponse(id=request.id)
        try:
            if request.kind == pb.SUBCALL_KIND_TOOL:
                response.result = self._call_tool(request)
            else:
                completions = self._call_lm(request)
                with self._lock:
                    self._calls.extend(completions)
                response.completions.extend(codec.completion_to_bytes(c) for c in completions)
        except BaseException as exc:  # SystemExit from a tool must not leave the cell waiting
            response.error = codec.text(str(exc))
            response.error_type = codec.text(type(exc).__name__)
        finally:
            if respond is not None:
                respond(response)

    def _call_lm(self, request: pb.SubcallRequest) -> list[RLMChatCompletion]:
        handler = self._handler
        if handler is None:
            raise SandboxError("no session is bound to this agent")
        prompts = [codec.loads(p) for p in request.prompts]
        model = request.model if request.has_model else None
        kind = request.kind
        if kind == pb.SUBCALL_KIND_LLM_QUERY:
            return [handler.llm_query(prompts[0], model)]
        if kind == pb.SUBCALL_KIND_LLM_QUERY_BATCHED:
            return handler.llm_query_batched(prompts, model)
        if kind == pb.SUBCALL_KIND_RLM_QUERY:
            return [handler.rlm_query(prompts[0], model)]
        if kind == pb.SUBCALL_KIND_RLM_QUERY_BATCHED:
            return handler.rlm_query_batched(prompts, model)
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
