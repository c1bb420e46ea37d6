"""The host side of tool calls: one rlm-core host tool that serves every DSPy tool by name.

The sandbox's tool stubs call :class:`ToolDispatcher` through rlm-core's bridge (a host
callable in ``custom_tools``), with the tool's name and its arguments as JSON text; the reply is
JSON text too: ``{"ok": true, "value": ...}`` or ``{"ok": false, "error": "Type: message"}``.
The tool is looked up when it is called, so DSPy may change the interpreter's ``tools`` dict at
any time. Calls run concurrently (each on its own bridge thread) in a copy of the context the
current ``execute()`` was called in, so ``dspy.context(...)`` settings reach them.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

from rlm_dspy.values import NotJSONError, json_text

DISPATCH_TOOL = "__rlm_dspy_tool__"
"""The rlm-core custom tool's name in the sandbox namespace."""

Invoke = Callable[[str, list[Any], dict[str, Any]], Any]
"""Calls one tool by name with positional and keyword arguments and returns its value (an
awaitable result already awaited, with :func:`await_in_sync`)."""


def await_in_sync(awaitable: Any) -> Any:
    """The result of ``awaitable``, from synchronous code (in a thread of its own when this
    thread already runs an event loop)."""

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    outcome: Future[Any] = Future()
    context = contextvars.copy_context()

    def run(coroutine: Coroutine[Any, Any, Any]) -> None:
        try:
            outcome.set_result(context.run(asyncio.run, coroutine))
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, args=(wait(),), daemon=True).start()
    return outcome.result()


def error_reply(exc: BaseException) -> str:
    """The reply for a failed call: the exception as DSPy's interpreters describe it."""
    return json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


class ToolDispatcher:
    """Serves tool calls from the sandbox (see the module docstring)."""

    def __init__(self, invoke: Invoke) -> None:
        self._invoke = invoke
        self._context = contextvars.copy_context()

    def capture_context(self) -> None:
        """Run the next calls in a copy of the caller's current context."""
        self._context = contextvars.copy_context()

    def __call__(self, name: str, arguments: str) -> str:
        """Call tool ``name`` with ``arguments`` (JSON ``{"args": [...], "kwargs": {...}}``)."""
        try:
            request = json.loads(arguments)
            args, kwargs = request["args"], request["kwargs"]
            value = self._context.copy().run(self._invoke, name, args, kwargs)
            body = json_text(value, f"the value tool {name!r} returned")
        except NotJSONError as exc:
            return json.dumps({"ok": False, "error": f"TypeError: {exc}"})
        except Exception as exc:
            return error_reply(exc)
        return '{"ok": true, "value": ' + body + "}"
