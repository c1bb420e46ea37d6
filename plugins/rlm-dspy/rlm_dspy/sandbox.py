"""Shipping the sandbox runner: the cells the host sends to install and call it."""

from __future__ import annotations

import functools
from pathlib import Path

from rlm_dspy.tool_calls import DISPATCH_TOOL

RUN_FUNCTION = "__rlm_dspy_run__"
"""The runner's name in the sandbox namespace."""

INLINE_LIMIT = 256 * 1024
"""Requests up to this many characters travel inside the cell's source text (one round
trip); longer ones are sent as a variable first (streamed in chunks of :data:`CHUNK`)."""

CHUNK = 16 * 1024 * 1024
"""Characters per message of a long request (its JSON is ASCII, so also bytes)."""


@functools.cache
def runner_source() -> str:
    """The source text of :mod:`rlm_dspy.sandbox_runner`, as shipped into the sandbox."""
    return Path(__file__).with_name("sandbox_runner.py").read_text(encoding="utf-8")


def install_cell() -> str:
    """A cell that runs the runner's source in a module object of its own and binds only
    :data:`RUN_FUNCTION` in the namespace."""
    return (
        f"{RUN_FUNCTION} = (lambda module: (exec(compile({runner_source()!r}, "
        "'<rlm-dspy runner>', 'exec'), module.__dict__), "
        f"module.bind(globals(), {DISPATCH_TOOL}))[1])"
        "(__import__('types').ModuleType('rlm_dspy_sandbox'))\n"
    )


def run_cell(request: str | None) -> str:
    """A cell that runs ``request`` (``None``: the one left in the namespace)."""
    return f"{RUN_FUNCTION}({request!r})" if request is not None else f"{RUN_FUNCTION}()"
