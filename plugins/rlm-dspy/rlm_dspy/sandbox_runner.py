"""The sandbox side: runs one DSPy ``execute`` request in the REPL namespace.

This module is shipped into the sandbox as source text and executed there in a module object
of its own, so it needs only the standard library and never imports ``rlm_dspy``, ``dspy`` or
the host side of ``rlm_core``. :func:`bind` returns the one function the host calls by name
in every cell. A request is JSON text: the code, the variables to bind, the current tool names
and output fields. The outcome (a last-expression value, a ``SUBMIT`` value, a syntax error or
a runtime error) goes back as JSON through the REPL's ``answer`` channel; the user's own
``answer`` variable, if any, is kept aside while the outcome is reported.
"""

from __future__ import annotations

import ast
import builtins
import json
from collections.abc import Callable
from typing import Any

REQUEST = "__rlm_dspy_request__"
"""Namespace variable holding a request too large for the cell's source text."""

ANSWER_STASH = "__rlm_dspy_answer__"
"""Namespace variable keeping the user's ``answer`` while the outcome is reported."""


class Submitted(BaseException):
    """Raised by ``SUBMIT``: ends the code and carries the submitted fields."""

    def __init__(self, value: dict[str, Any]) -> None:
        super().__init__(value)
        self.value = value


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is the agent's cell-timeout interrupt, which must end the cell."""
    kind = type(exc)
    return (
        kind.__name__ == "CellTimeout"
        and kind.__module__ == "builtins"
        and not issubclass(kind, Exception)
    )


def jsonable(value: Any) -> Any:
    """``value`` if it is JSON-compatible, else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def make_submit(fields: list[str] | None) -> Callable[..., Any]:
    """``SUBMIT`` with one parameter per output field (``SUBMIT(output)`` without fields)."""
    if not fields:

        def submit(output: Any) -> Any:
            raise Submitted({"output": output})

        submit.__name__ = submit.__qualname__ = "SUBMIT"
        return submit
    params = ", ".join(fields)
    values = ", ".join(f"{name!r}: {name}" for name in fields)
    source = f"def SUBMIT({params}):\n    raise __rlm_dspy_submitted__({{{values}}})\n"
    scope: dict[str, Any] = {"__rlm_dspy_submitted__": Submitted, "__builtins__": builtins}
    exec(compile(source, "<SUBMIT>", "exec"), scope)
    made: Callable[..., Any] = scope["SUBMIT"]
    return made


def make_stub(name: str, call_host: Callable[[str, str], str]) -> Callable[..., Any]:
    """A function that calls the host tool ``name`` with JSON arguments and returns its JSON
    result; a failure of the tool is raised here as ``RuntimeError("Type: message")``."""

    def stub(*args: Any, **kwargs: Any) -> Any:
        try:
            arguments = json.dumps({"args": list(args), "kwargs": kwargs}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"arguments of tool {name!r} must be JSON-compatible: {exc}") from None
        reply = json.loads(call_host(name, arguments))
        if reply.get("ok"):
            return reply.get("value")
        raise RuntimeError(reply.get("error", "tool call failed"))

    stub.__name__ = stub.__qualname__ = name
    return stub


class Runner:
    """Runs requests in one namespace; holds the tool stubs and ``SUBMIT`` it made."""

    def __init__(self, namespace: dict[str, Any], call_host: Callable[[str, str], str]) -> None:
        self.ns = namespace
        self.call_host = call_host
        self.stubs: dict[str, Callable[..., Any]] = {}
        self.tool_names: set[str] = set()
        self.submit_fields: list[str] | None = None
        self.submit = make_submit(None)

    def run(self, request_text: str | None = None) -> None:
        """Run one request (given, or left in the namespace by the host) and report it."""
        if request_text is None:
            stored = self.ns.pop(REQUEST)
            request_text = stored if isinstance(stored, str) else "".join(stored)
        request = json.loads(request_text)
        outcome: dict[str, Any] = {"id": request["id"]}
        self._take_back_answer()
        try:
            self._configure(request["tools"], request.get("output_fields"))
            self.ns.update(request["variables"])
            outcome.update(self._execute(request["code"]))
        finally:
            self._report(outcome)

    def _configure(self, tool_names: list[str], fields: list[str] | None) -> None:
        for gone in self.tool_names.difference(tool_names):
            self.ns.pop(gone, None)
        self.tool_names = set(tool_names)
        for name in tool_names:
            stub = self.stubs.get(name)
            if stub is None:
                stub = self.stubs[name] = make_stub(name, self.call_host)
            self.ns[name] = stub
        if fields != self.submit_fields:
            self.submit_fields = fields
            self.submit = make_submit(fields)
        self.ns["SUBMIT"] = self.submit

    def _hook_builtins(self) -> None:
        """Keep the sandbox ``dspy`` facade importable where it hooks ``__import__`` (an
        interpreter in the host's own process): put a fresh hooked copy of the REPL's
        builtins in place for this code, since the REPL restores its own after every cell."""
        hook = self.ns.get("_dspy_import")
        hooked = self.ns.get("_dspy_builtins")
        if (
            not callable(hook)
            or not isinstance(hooked, dict)
            or hooked.get("__import__") is not hook
        ):
            return
        base = self.ns.get("__builtins__", builtins)
        fresh = dict(base if isinstance(base, dict) else vars(base))
        fresh["__import__"] = hook
        self.ns["__builtins__"] = fresh

    def _execute(self, code: str) -> dict[str, Any]:
        try:
            tree = ast.parse(code, mode="exec")
            last = tree.body[-1] if tree.body else None
            tail = None
            if isinstance(last, ast.Expr):
                tree.body.pop()
                tail = compile(ast.Expression(last.value), "<interpreter>", "eval")
            body = compile(tree, "<interpreter>", "exec")
        except SyntaxError as exc:
            return {"kind": "syntax", "error": str(exc)}
        self._hook_builtins()
        try:
            exec(body, self.ns)
            value = eval(tail, self.ns) if tail is not None else None
        except Submitted as submitted:
            return {"kind": "final", "value": jsonable(submitted.value)}
        except SyntaxError as exc:
            return {"kind": "syntax", "error": str(exc)}
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            return {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
        return {"kind": "result", "value": jsonable(value)}

    def _take_back_answer(self) -> None:
        kept = self.ns.pop(ANSWER_STASH, [])
        if kept:
            self.ns["answer"] = kept[0]
        else:
            self.ns.pop("answer", None)

    def _report(self, outcome: dict[str, Any]) -> None:
        self.ns[ANSWER_STASH] = [self.ns["answer"]] if "answer" in self.ns else []
        text = json.dumps(outcome, allow_nan=True)
        self.ns["answer"] = {"content": text, "ready": True}


def bind(namespace: dict[str, Any], call_host: Callable[[str, str], str]) -> Callable[..., None]:
    """The function the host calls in each cell: ``run(request_text=None)``."""
    return Runner(namespace, call_host).run
