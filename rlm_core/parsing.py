"""Reading root-LM replies and turning cell results into the next prompt."""

from __future__ import annotations

import re
from typing import Any

from rlm_core.types import CappedLocal, LocalText, Messages, REPLResult, RLMIteration

MAX_BLOCK_OUTPUT_CHARS = 20_000
"""Per-cell cap on the REPL output fed back to the root LM."""

_BLOCK = re.compile(r"```repl[ \t]*\r?\n(.*?)\r?\n[ \t]*```", re.DOTALL)
_UNCLOSED = re.compile(r"```repl[ \t]*\r?\n(.*)\Z", re.DOTALL)

SIMPLE_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict", "tuple"})
"""Types of the variables named under "REPL variables" after a cell's output."""

_SIMPLE = (str, int, float, bool, list, dict, tuple)
_INTERNAL_NAMES = ("__builtins__", "__name__", "__doc__")


def find_code_blocks(text: str | None) -> list[str]:
    """Return the code of every ```` ```repl ```` block in ``text``, in order.

    A final block whose closing fence is missing (a reply cut off by a token limit) is
    still returned, since the code up to the cut is usually what the model meant to run.
    """
    if not text:
        return []
    blocks = [m.group(1).strip() for m in _BLOCK.finditer(text)]
    tail_start = 0
    for m in _BLOCK.finditer(text):
        tail_start = m.end()
    unclosed = _UNCLOSED.search(text, tail_start)
    if unclosed and "```" not in unclosed.group(1):
        code = unclosed.group(1).strip()
        if code:
            blocks.append(code)
    return [b for b in blocks if b]


def truncate(text: str, limit: int = MAX_BLOCK_OUTPUT_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}\n... [output truncated: {dropped:,} more characters not shown]"


def truncate_block_output(text: str, limit: int = MAX_BLOCK_OUTPUT_CHARS) -> str:
    """Cut a cell's output for the root LM as ``rlms`` does: ``limit`` characters, then
    ``... + [N chars...]``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... + [{len(text) - limit} chars...]"


def _is_listed(value: Any) -> bool:
    """Whether a variable's value (as ``REPLResult.locals`` holds it) is of one of the
    :data:`SIMPLE_TYPES`, which ``rlms`` lists after a cell's output."""
    if isinstance(value, CappedLocal):
        return value.get("type") in SIMPLE_TYPES
    return isinstance(value, _SIMPLE) and not isinstance(value, LocalText)


def format_execution_result(result: REPLResult) -> str:
    """Render one cell's stdout, stderr and variable names for the root LM, as ``rlms``
    does: the variables listed are those not private whose values are of one of the
    :data:`SIMPLE_TYPES`."""
    parts = []
    if result.stdout:
        parts.append(f"\n{result.stdout}")
    if result.stderr:
        parts.append(f"\n{result.stderr}")
    names = [
        name
        for name, value in result.locals.items()
        if not name.startswith("_") and name not in _INTERNAL_NAMES and _is_listed(value)
    ]
    if names:
        parts.append(f"REPL variables: {names}\n")
    return "\n\n".join(parts) if parts else "No output"


def format_iteration(
    iteration: RLMIteration, max_character_length: int = MAX_BLOCK_OUTPUT_CHARS
) -> Messages:
    """The messages one iteration adds to the root history.

    The assistant reply, then (when code ran) one user message holding every block's
    output, each cut to ``max_character_length`` characters by :func:`truncate_block_output`.
    """
    messages: Messages = [{"role": "assistant", "content": iteration.response}]
    multi = len(iteration.code_blocks) > 1
    parts = []
    for i, block in enumerate(iteration.code_blocks):
        output = truncate_block_output(format_execution_result(block.result), max_character_length)
        header = f"REPL output (block {i + 1}):" if multi else "REPL output:"
        parts.append(f"{header}\n{output}")
    if parts:
        messages.append({"role": "user", "content": "\n\n".join(parts)})
    return messages
