"""The REPL namespace cells run in, shared by every environment that runs Python itself.

It needs only the standard library (the in-sandbox agent imports it too). It owns the REPL
names (``context``/``context_N``, ``llm_query``, ``llm_query_batched``, ``rlm_query``,
``rlm_query_batched``, ``answer``, ``SHOW_VARS``, ``history``), per-cell output capture
that is safe when several namespaces run cells in different threads at once, and the
bookkeeping of which sub-calls a cell made and whether it submitted an answer.
"""

from __future__ import annotations

import builtins
import codecs
import io
import itertools
import linecache
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rlm_core.agent.codec import text
from rlm_core.types import REPLResult, RLMChatCompletion, describe_locals
from rlm_core.vocabulary import RESERVED_NAMES, SubcallHandler, ToolSpec

MAX_CAPTURED_CHARS = 1_000_000
"""Per-stream cap on what one cell's stdout/stderr keeps in memory."""

_NUMBERED = re.compile(r"^(context|history)_\d+$")
_SCAFFOLD_FUNCTIONS = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched")
_cell_ids = itertools.count(1)
_MISSING = object()


# -- output capture ---------------------------------------------------------------------


class _BoundedBuffer:
    """A text sink that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self._buf = io.StringIO()
        self._limit = limit
        self._kept = 0
        self._dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write_bytes(self, data: bytes) -> int:
        """Bytes a cell wrote to ``sys.stdout.buffer``: decoded as UTF-8, bad bytes
        replaced (a character split across writes is kept whole)."""
        self.write(self._decoder.decode(bytes(data)))
        return len(data)

    def write(self, text: str) -> int:
        room = self._limit - self._kept
        if room > 0:
            piece = text[:room]
            self._buf.write(piece)
            self._kept += len(piece)
            self._dropped += len(text) - len(piece)
        else:
            self._dropped += len(text)
        return len(text)

    def getvalue(self) -> str:
        self.write(self._decoder.decode(b"", final=True))
        value = self._buf.getvalue()
        if self._dropped:
            value += f"\n... [output capped: {self._dropped:,} more characters not kept]"
        return value


_route = threading.local()


class _RoutingStream:
    """Stands in for ``sys.stdout``/``sys.stderr``: writes from a thread that is running a
    cell go to that cell's buffer, everything else to the stream it replaced."""

    def __init__(self, fallback: TextIO, which: str) -> None:
        self._fallback = fallback
        self._which = which

    def _target(self) -> Any:
        buf = getattr(_route, self._which, None)
        return self._fallback if buf is None else buf

    def write(self, text: str) -> int:
        written = self._target().write(text)  # some streams (Ray's workers') return None
        return len(text) if written is None else int(written)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is self._fallback:
            self._fallback.flush()

    def isatty(self) -> bool:
        return False if getattr(_route, self._which, None) is not None else self._fallback.isatty()

    @property
    def buffer(self) -> Any:
        """The binary layer: a cell's bytes go into its output (decoded, bad bytes
        replaced), other threads' to the replaced stream's own buffer."""
        buf = getattr(_route, self._which, None)
        return self._fallback.buffer if buf is None else _BinaryInto(buf)


class _BinaryInto:
    """``sys.stdout.buffer`` as a cell sees it."""

    def __init__(self, sink: _BoundedBuffer) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        return self._sink.write_bytes(data)

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


_install_lock = threading.Lock()


def _ensure_routing() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _RoutingStream):
            sys.stdout = _RoutingStream(sys.stdout, "stdout")
        if not isinstance(sys.stderr, _RoutingStream):
            sys.stderr = _RoutingStream(sys.stderr, "stderr")


@contextmanager
def host_output() -> Iterator[None]:
    """Let host code that runs on a cell's thread (callbacks, hooks, child RLMs' progress)
    print to the real streams instead of into the cell's output."""
    saved = getattr(_route, "stdout", None), getattr(_route, "stderr", None)
    _route.stdout = _route.stderr = None
    try:
        yield
    finally:
        _route.stdout, _route.stderr = saved


@contextmanager
def capture_output(
    limit: int = MAX_CAPTURED_CHARS,
) -> Iterator[tuple[_BoundedBuffer, _BoundedBuffer]]:
    """Capture what the current thread prints, without touching other threads' output."""
    _ensure_routing()
    out, err = _BoundedBuffer(limit), _BoundedBuffer(limit)
    saved = getattr(_route, "stdout", None), getattr(_route, "stderr", None)
    _route.stdout, _route.stderr = out, err
    try:
        yield out, err
    finally:
        _route.stdout, _route.stderr = saved


# -- the namespace ----------------------------------------------------------------------


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


MAX_TRACEBACK_FRAMES = 100
"""Frames shown per exception of a cell's traceback (the innermost ones); a deeper stack
(say, after ``sys.setrecursionlimit(10**6)``) would take seconds just to format."""


def _stack_depth(exc: BaseException, stop_after: int) -> int:
    depth, tb = 0, exc.__traceback__
    while tb is not None and depth <= stop_after:
        depth, tb = depth + 1, tb.tb_next
    return depth


def _cell_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised by a cell, without rlm-core's own frames
    (the REPL machinery, sub-call plumbing, signal handlers): the model sees its code.
    Beyond :data:`MAX_TRACEBACK_FRAMES` frames, only the innermost ones are shown."""
    limit = MAX_TRACEBACK_FRAMES
    deep = _stack_depth(exc, limit) > limit
    report = traceback.TracebackException.from_exception(exc, limit=-limit if deep else None)
    frames = [f for f in report.stack if not f.filename.startswith(_PACKAGE_DIR)]
    report.stack = traceback.StackSummary.from_list(frames)
    text = "".join(report.format())
    if deep:
        note = f"(only the innermost {limit} frames of a deeper stack are shown)\n"
        header = "Traceback (most recent call last):\n"
        text = text.replace(header, header + note, 1)
    return text


def _no_input(*_args: Any, **_kwargs: Any) -> str:
    raise RuntimeError("input() is not available in the REPL: there is no one to type")


def _describe(value: Any) -> str:
    return type(value).__name__


class REPLNamespace:
    """A persistent Python namespace with the RLM REPL names bound to a sub-call handler."""

    def __init__(self, subcalls: SubcallHandler | None = None) -> None:
        safe_builtins = dict(vars(builtins))
        safe_builtins["input"] = _no_input
        self._builtins = safe_builtins
        self._pristine_builtins = dict(safe_builtins)
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": safe_builtins}
        self._pinned: dict[str, Any] = {}
        self._tool_names: set[str] = set()
        self._calls: list[RLMChatCompletion] = []
        self._calls_lock = threading.Lock()
        self._subcalls: SubcallHandler | None = None
        self.executing = False
        """True exactly while a cell's code runs (interrupts are only delivered then)."""
        self.ns["answer"] = {"content": "", "ready": False}
        self.ns["SHOW_VARS"] = self.show_vars
        self.bind(subcalls)

    # -- binding ------------------------------------------------------------------------

    def bind(self, subcalls: SubcallHandler | None) -> None:
        """Route ``llm_query`` and friends to ``subcalls`` (``None``: they return errors)."""
        self._subcalls = subcalls
        self._restore_scaffold()

    def install_tools(self, tools: list[ToolSpec]) -> None:
        """Make custom tools available under their names: functions and values are bound,
        ``{"source": ...}`` tools are run here (``ValueError`` if the source fails or does
        not define the tool's name)."""
        for tool in tools:
            source = tool.source
            if source is None:
                self.ns[tool.name] = tool.value
            else:
                result = self.run(source)
                if result.error or tool.name not in self.ns:
                    problem = result.error or f"it does not define {tool.name!r}"
                    raise ValueError(f"custom tool {tool.name!r}: its source failed: {problem}")
            self._tool_names.add(tool.name)

    def _record(self, completions: list[RLMChatCompletion]) -> None:
        with self._calls_lock:
            self._calls.extend(completions)

    @staticmethod
    def _text(completion: RLMChatCompletion) -> str:
        if completion.error is not None:
            return completion.response or f"Error: {completion.error}"
        return completion.response

    def _handler(self) -> SubcallHandler:
        if self._subcalls is None:
            raise RuntimeError("no LM is connected to this REPL")
        return self._subcalls

    def llm_query(self, prompt: Any, model: str | None = None) -> str:
        """One plain sub-LM call; returns the reply text (``"Error: ..."`` on failure)."""
        completion = self._handler().llm_query(prompt, model)
        self._record([completion])
        return self._text(completion)

    def llm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[str]:
        """Concurrent plain sub-LM calls; replies in prompt order."""
        completions = self._handler().llm_query_batched(list(prompts), model)
        self._record(completions)
        return [self._text(c) for c in completions]

    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        """A child RLM (or a plain LM call at max depth); returns its answer."""
        completion = self._handler().rlm_query(prompt, model)
        self._record([completion])
        return self._text(completion)

    def rlm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[str]:
        """Concurrent child RLMs; answers in prompt order."""
        completions = self._handler().rlm_query_batched(list(prompts), model)
        self._record(completions)
        return [self._text(c) for c in completions]

    def show_vars(self) -> str:
        """``SHOW_VARS()``: the user's variables and their types."""
        available = {name: _describe(value) for name, value in self.user_variables().items()}
        if not available:
            return "No variables created yet. Use ```repl``` blocks to create variables."
        return f"Available variables: {available}"

    def user_variables(self) -> dict[str, Any]:
        """Variables the model can work with (no scaffold, no private names, no tools)."""
        return {k: v for k, v in self.reported_variables().items() if k != "answer"}

    def reported_variables(self) -> dict[str, Any]:
        """The variables a cell's ``REPLResult.locals`` reports, as ``rlms`` does: ``answer``
        and :meth:`user_variables`, in the order they were first bound."""
        hidden = {"__builtins__", "SHOW_VARS", *_SCAFFOLD_FUNCTIONS}
        return {
            k: v
            for k, v in list(self.ns.items())
            if isinstance(k, str)
            and not k.startswith("_")
            and k not in hidden
            and not (k in self._tool_names and callable(v))
        }

    # -- variables ----------------------------------------------------------------------

    def set(self, name: str, value: Any) -> None:
        """Bind a variable; REPL names (``context``, ``context_N``, ``history``,
        ``history_N``) are pinned, so a cell that rebinds them gets them back after it ends."""
        self.ns[name] = value
        if name in RESERVED_NAMES or _NUMBERED.match(name):
            self._pinned[name] = value

    def get(self, name: str) -> Any:
        """Return a variable; ``KeyError`` if it is not set."""
        if name not in self.ns:
            raise KeyError(name)
        return self.ns[name]

    def load_context(self, payload: Any, index: int) -> None:
        """Bind ``context_{index}`` (and ``context`` for index 0)."""
        self.set(f"context_{index}", payload)
        if index == 0:
            self.set("context", payload)

    def _restore_scaffold(self) -> None:
        self.ns["__builtins__"] = self._builtins
        _put_back(self._builtins, self._pristine_builtins)
        for name in _SCAFFOLD_FUNCTIONS:
            self.ns[name] = getattr(self, name)
        self.ns["SHOW_VARS"] = self.show_vars
        if not _is_dict(self.ns.get("answer")):
            self.ns["answer"] = {"content": "", "ready": False}
        for name, value in self._pinned.items():
            self.ns[name] = value

    # -- running cells ------------------------------------------------------------------

    def run(self, code: str, *, reraise_interrupt: bool = True) -> REPLResult:
        """Execute ``code`` in the namespace and report output, errors, calls and answer.

        ``KeyboardInterrupt`` propagates (so Ctrl+C stops an in-process run) unless
        ``reraise_interrupt`` is false, when it is reported like any other exception.
        Whatever the cell does to the REPL (rebinding ``__builtins__``, deleting names from
        the ``builtins`` module, replacing ``sys.stdout``, an ``answer`` that cannot be
        read) is undone or reported as the cell's error: it never escapes this method.
        """
        with self._calls_lock:
            self._calls = []
        start = time.perf_counter()
        error: str | None = None
        filename = f"<cell-{next(_cell_ids)}>"
        saved_builtins = dict(vars(builtins))
        with capture_output() as (out, err):
            saved_streams = sys.stdin, sys.stdout, sys.stderr
            try:
                self.execute_source(code, filename)
            except BaseException as exc:
                if reraise_interrupt and isinstance(exc, KeyboardInterrupt):
                    raise
                with self.interruptible():  # an exception's __str__ is the cell's code too
                    error = _describe_exception(exc)
                    if isinstance(exc, SystemExit):
                        err.write(f"{error} (the cell called sys.exit; the REPL keeps running)\n")
                    else:
                        err.write(_formatted(self.format_exception, exc).rstrip("\n") + "\n")
            finally:
                linecache.cache.pop(filename, None)
                _undo_rebinding(saved_builtins, saved_streams)
            self._restore_scaffold()
            final, problem = self._final_answer()
            if problem is not None:
                error = error or problem
                err.write(problem + "\n")
            values, ran_code = self._described_locals(reraise_interrupt)
            if ran_code:  # a __repr__ is the cell's code too
                _undo_rebinding(saved_builtins, saved_streams)
                self._restore_scaffold()
        with self._calls_lock:
            calls, self._calls = self._calls, []
        return REPLResult(
            stdout=out.getvalue(),
            stderr=err.getvalue(),
            locals=values,
            execution_time=time.perf_counter() - start,
            rlm_calls=calls,
            final_answer=final,
            error=error,
        )

    def execute_source(self, code: str, filename: str) -> None:
        """Run one cell's source in :attr:`ns`, raising whatever the cell raised.

        The step a subclass replaces to run cells another way (``rlm-ipython`` runs them
        through an IPython shell); :meth:`run` does everything around it (output capture,
        the error report, the answer, restoring the REPL names). The cell's own code must
        run inside :meth:`interruptible`, so that a timeout interrupts only that.
        ``filename`` names the cell in tracebacks: the default registers the source in
        :mod:`linecache` under it (:meth:`run` removes it afterwards).
        """
        try:
            compiled = compile(code, filename, "exec")
        except UnicodeEncodeError:  # a lone surrogate: escaped, as on the wire
            code = text(code)
            compiled = compile(code, filename, "exec")
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        with self.interruptible():
            exec(compiled, self.ns)

    def format_exception(self, exc: BaseException) -> str:
        """The traceback written to the cell's stderr for ``exc``, which the cell raised
        (``SystemExit`` aside). The default shows the cell's frames, not rlm-core's."""
        return _cell_traceback(exc)

    def _final_answer(self) -> tuple[str | None, str | None]:
        """``(answer text or None, None)``, or ``(None, problem)`` when the ``answer`` the
        cell left cannot be read (its ``__bool__`` or ``__str__`` raised, say)."""
        answer: Any = self.ns.get("answer")
        try:
            with self.interruptible():  # reading it may run the cell's code
                if _is_dict(answer) and dict.get(answer, "ready"):
                    return str(dict.get(answer, "content", "")), None
            return None, None
        except BaseException as exc:
            return None, f"AnswerError: answer could not be read: {_describe_exception(exc)}"

    def _described_locals(self, reraise_interrupt: bool) -> tuple[dict[str, Any], bool]:
        """``REPLResult.locals``: :meth:`reported_variables` rendered by
        :func:`~rlm_core.types.describe_local` (a timeout may interrupt a hanging
        ``__repr__``, which is then shown as ``<T>``), and whether the values' own code
        may have run."""
        try:
            with self.interruptible():
                return describe_locals(self.reported_variables())
        except KeyboardInterrupt:
            if reraise_interrupt:
                raise
            return {}, True

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Mark code that runs the cell's own code or objects: a timeout interrupts only
        that (it sets :attr:`executing` for the duration)."""
        self.executing = True
        try:
            yield
        finally:
            self.executing = False

    def clear(self) -> None:
        """Drop every variable (used on close)."""
        self.ns.clear()
        self._pinned.clear()


_MAX_ERROR_CHARS = 10_000


def _formatted(format_: Any, exc: BaseException) -> str:
    """``format_(exc)``, or a short note when formatting itself fails."""
    try:
        return str(format_(exc))
    except BaseException as problem:
        return f"<unprintable: {type(problem).__name__}>"


def _describe_exception(exc: BaseException) -> str:
    """``"TypeError: message"`` (at most a few thousand characters), even when the
    exception's own ``__str__`` raises."""
    if isinstance(exc, SystemExit):
        text = f"SystemExit: {_formatted(lambda e: e.code, exc)}"
    else:
        text = _formatted(
            lambda e: "".join(traceback.format_exception_only(type(e), e)).strip(), exc
        )
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + f"... [{len(text) - _MAX_ERROR_CHARS:,} more characters]"
    return text


def _undo_rebinding(saved_builtins: dict[str, Any], streams: tuple[Any, Any, Any]) -> None:
    """Put back what a cell removed from or rebound in the ``builtins`` module (shared by
    the whole process) and the standard streams it replaced."""
    _put_back(vars(builtins), saved_builtins)
    sys.stdin, sys.stdout, sys.stderr = streams


def _is_dict(value: Any) -> bool:
    """``isinstance(value, dict)`` that no ``__class__`` property can fool or break."""
    return issubclass(type(value), dict)


def _put_back(names: dict[str, Any], saved: dict[str, Any]) -> None:
    """Rebind in ``names`` every entry of ``saved`` that was deleted or rebound."""
    if _unchanged(names, saved):
        return
    for name, value in saved.items():
        if names.get(name, _MISSING) is not value:
            names[name] = value


def _unchanged(names: dict[str, Any], saved: dict[str, Any]) -> bool:
    """Whether every entry of ``saved`` is still in ``names``, bound to the same object:
    a comparison in C, which only calls ``__eq__`` of objects a cell put in place of the
    saved ones (then any answer but a clean ``True`` means "changed")."""
    try:
        return bool(len(names) == len(saved) and names == saved)
    except BaseException:
        return False
