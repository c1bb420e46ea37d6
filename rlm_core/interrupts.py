"""Ctrl+C that is not lost while a completion runs.

CPython swallows a ``KeyboardInterrupt`` that is raised while a finalizer runs (a
``weakref.finalize`` callback, a ``__del__``, a generator closed by the garbage collector):
it prints "Exception ignored in ..." and the program goes on. Garbage collection can run
finalizers on the main thread at any allocation, so a Ctrl+C pressed at that moment would
be gone, and a completion blocked on a sub-call that never returns would wait for ever.

While a completion runs on the main thread with Python's default SIGINT handling,
:func:`recording_ctrl_c` installs a handler that raises ``KeyboardInterrupt`` as the default
one does and also records that Ctrl+C was pressed. The completion's waits for sub-calls
(:func:`wait_for`) wait in slices and raise ``KeyboardInterrupt`` again once it was
recorded; the loop calls :func:`check` after each LM call and each cell, and an agent
environment before it sends a cell. The record is cleared when the outermost completion
ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

WAIT_SLICE = 0.25
"""Seconds a wait on the main thread blocks before it looks for a recorded Ctrl+C."""

_pressed = threading.Event()
_depth = 0  # completions running under the handler (main thread only)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pressed.set()
    raise KeyboardInterrupt


def _watching() -> bool:
    return _depth > 0 and threading.current_thread() is threading.main_thread()


@contextmanager
def recording_ctrl_c() -> Iterator[None]:
    """Record Ctrl+C for the duration (see the module docstring).

    Does nothing off the main thread, or when SIGINT has a handler other than Python's
    default (an application's own handling of Ctrl+C is left alone). Nests: the handler
    is installed by the outermost use and restored when it ends.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        _pressed.clear()
        signal.signal(signal.SIGINT, _on_sigint)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            if signal.getsignal(signal.SIGINT) is _on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            _pressed.clear()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl+C was recorded (on the main thread only)."""
    if _pressed.is_set() and _watching():
        raise KeyboardInterrupt


def wait_for(future: Future[T]) -> T:
    """``future.result()``, which on the main thread under :func:`recording_ctrl_c` also
    ends with ``KeyboardInterrupt`` once Ctrl+C was recorded, even if Python swallowed the
    one raised when it was pressed."""
    if _watching():
        check()
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(WAIT_SLICE):
            check()
    return future.result()
