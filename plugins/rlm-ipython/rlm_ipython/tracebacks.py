"""Tracebacks of a cell's exceptions as IPython formats them, without the machinery's
frames."""

from __future__ import annotations

import os
import types
from typing import Any

import IPython
from IPython.core.interactiveshell import InteractiveShell

import rlm_core
import rlm_ipython

_HIDDEN_DIRS = tuple(
    os.path.dirname(os.path.abspath(package.__file__ or "")) + os.sep
    for package in (IPython, rlm_core, rlm_ipython)
)
"""Frames from these packages are not the cell's: tracebacks leave them out."""


MAX_FRAMES = 60
"""Frames of a cell's traceback that IPython formats: the first and last half of them
when there are more (a deep recursion has about a thousand, and IPython's formatter spends
long on each frame, more so in a process that has imported many modules)."""


def cell_frames(
    tb: types.TracebackType | None, limit: int = MAX_FRAMES
) -> tuple[types.TracebackType | None, int]:
    """``tb`` without the frames of IPython, rlm-core and this package (the machinery
    around a cell, an interrupt's signal handler), so the model sees its own code; and of
    more than ``limit`` frames, only the first and last ``limit // 2``. Returns the new
    traceback and how many frames were left out of its middle."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_HIDDEN_DIRS):
            kept.append(tb)
        tb = tb.tb_next
    left_out = 0
    if len(kept) > limit:
        half = limit // 2
        left_out = len(kept) - 2 * half
        kept = kept[:half] + kept[-half:]
    chain = None
    for entry in reversed(kept):
        chain = types.TracebackType(chain, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return chain, left_out


def show_cell_traceback(
    shell: InteractiveShell, etype: Any, value: Any, tb: Any, tb_offset: Any = None
) -> Any:
    """Show (keep) IPython's traceback of what a cell raised, without the machinery's
    frames: the shell's handler of every exception but ``SystemExit``."""
    frames, left_out = cell_frames(tb)
    stb = shell.InteractiveTB.structured_traceback(etype, value, frames, tb_offset=0)
    if left_out:
        stb = [*stb[:-1], f"... {left_out} frames in the middle left out ...", *stb[-1:]]
    shell._showtraceback(etype, value, stb)
    return stb
