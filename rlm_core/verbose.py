"""Plain-text progress output for ``RLM(verbose=True)``.

These lines are all that is printed when the output is not a terminal; on a terminal
:mod:`rlm_core.progress` prints the same lines above a live status line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from rlm_core.parsing import truncate
from rlm_core.types import RLMIteration, RLMMetadata, UsageSummary

_PREVIEW = 600


class VerbosePrinter:
    """Prints run metadata, each iteration (reply, code, output) and the final answer.

    Lines go to ``stream`` (default: ``sys.stdout`` at the time of printing), or to
    ``write`` when given (called with each line, without its newline).
    """

    def __init__(
        self,
        enabled: bool = True,
        stream: TextIO | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self._stream = stream
        self._write = write

    def _out(self, text: str) -> None:
        if not self.enabled:
            return
        if self._write is not None:
            self._write(text)
            return
        stream = self._stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()

    def print_metadata(self, metadata: RLMMetadata) -> None:
        """The run configuration."""
        self._out(
            f"== RLM: backend={metadata.backend} model={metadata.root_model} "
            f"environment={metadata.environment_type} max_depth={metadata.max_depth} "
            f"max_iterations={metadata.max_iterations}"
        )

    def print_iteration(self, iteration: RLMIteration, number: int) -> None:
        """One root turn with its cells."""
        if not self.enabled:
            return
        self._out(f"-- iteration {number} ({iteration.iteration_time or 0:.2f}s)")
        self._out(truncate(iteration.response, _PREVIEW))
        for block in iteration.code_blocks:
            result = block.result
            calls = f", {len(result.rlm_calls)} sub-call(s)" if result.rlm_calls else ""
            self._out(f"   [cell {result.execution_time:.3f}s{calls}]")
            if result.stdout:
                self._out(truncate(result.stdout, _PREVIEW))
            if result.stderr:
                self._out(truncate(result.stderr, _PREVIEW))

    def print_compaction(self, tokens: int, limit: int) -> None:
        """A compaction happened."""
        self._out(f"-- compacting history ({tokens:,} of {limit:,} tokens)")

    def print_limit(self, kind: str, details: str) -> None:
        """A limit stopped the run."""
        self._out(f"!! limit reached ({kind}): {details}")

    def print_final_answer(self, answer: str, seconds: float, usage: UsageSummary) -> None:
        """The answer and the usage totals."""
        self._out(
            f"== answer after {seconds:.2f}s, {usage.total_calls} LM call(s), "
            f"{usage.total_input_tokens:,} in / {usage.total_output_tokens:,} out tokens"
        )
        self._out(answer)
