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


def cell_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of IPython, rlm-core and this package (the machinery
    around a cell, an interrupt's signal handler): the model sees its own code."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_HIDDEN_DIRS):
            kept.append(tb)
        tb = tb.tb_next
    chain = None
    for entry in reversed(kept):
        chain = types.TracebackType(chain, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return chain


def show_cell_traceback(
    shell: InteractiveShell, etype: Any, value: Any, tb: Any, tb_offset: Any = None
) -> Any:
    """Show (keep) IPython's traceback of what a cell raised, without the machinery's
    frames: the shell's handler of every exception but ``SystemExit``."""
    stb = shell.InteractiveTB.structured_traceback(etype, value, cell_frames(tb), tb_offset=0)
    shell._showtraceback(etype, value, stb)
    return stb
