"""Hooks that keep IPython shells from disturbing the process they share.

IPython swaps process-wide state for each cell (``sys.displayhook``, names in the
``builtins`` module), which goes wrong when cells of several shells run in threads of one
process at once. These stand-ins give each thread its own shell's hook instead.
"""

# IPython's classes are only partly annotated: calling them is no error here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Literal

from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook

_current = threading.local()
_install_lock = threading.Lock()


class _RoutingDisplayHook:
    """Stands in for ``sys.displayhook``: a thread running a cell shows values through
    its shell's hook, every other thread through the hook it replaced. (IPython swaps the
    process-wide hook for each cell, which breaks when cells of several shells run in
    threads of one process at once.)"""

    def __init__(self, fallback: Callable[[object], object]) -> None:
        self.fallback = fallback

    def __call__(self, value: object) -> None:
        hook = getattr(_current, "hook", None)
        (self.fallback if hook is None else hook)(value)


class ThreadDisplayTrap(DisplayTrap):
    """The shell's ``display_trap``: routes this thread's ``sys.displayhook`` calls to the
    shell's hook while a cell runs, and leaves ``sys.displayhook`` itself alone."""

    def __enter__(self) -> None:
        with _install_lock:
            if not isinstance(sys.displayhook, _RoutingDisplayHook):
                sys.displayhook = _RoutingDisplayHook(sys.displayhook)
        saved = getattr(_current, "saved", [])
        saved.append(getattr(_current, "hook", None))
        _current.saved, _current.hook = saved, self.hook

    def __exit__(self, *exc: object) -> Literal[False]:
        _current.hook = _current.saved.pop()
        return False


class NoBuiltinTrap(BuiltinTrap):
    """The shell's ``builtin_trap``: cells already find ``get_ipython``, ``exit`` and
    ``quit`` in their namespace, so the process's ``builtins`` module is left alone."""

    def __enter__(self) -> NoBuiltinTrap:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False


class ValueDisplayHook(DisplayHook):
    """Shows a cell's last value as its plain text, without an ``Out[N]:`` prompt."""

    def write_output_prompt(self) -> None:
        """Write nothing: the value alone, as a notebook's ``text/plain`` output."""
