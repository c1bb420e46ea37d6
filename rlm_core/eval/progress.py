"""Progress of a run on a terminal: a bar redrawn in place, or plain lines when the
stream is not a terminal (a log file, CI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from rlm_core.eval.results import TaskResult

BAR_WIDTH = 30
REDRAW_EVERY = 0.1
"""Seconds between redraws of the bar."""
LINE_STEPS = 20
"""A plain line each time another 1/LINE_STEPS of the tasks is done."""


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts finished tasks out of ``total`` (``done`` of them finished before this run)."""

    def __init__(
        self,
        total: int,
        done: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.done = done
        self.resumed = done
        self.errors = 0
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._drawn = 0.0
        self._step = done * LINE_STEPS // max(1, total)

    def advance(self, result: TaskResult) -> None:
        """One more task finished."""
        self.done += 1
        if result.error_type:
            self.errors += 1
        if self.stream is None:
            return
        if self.tty:
            now = self.clock()
            if now - self._drawn >= REDRAW_EVERY or self.done == self.total:
                self._drawn = now
                self.stream.write("\r" + self.line() + "\x1b[K")  # clear what is left
                self.stream.flush()
            return
        step = self.done * LINE_STEPS // max(1, self.total)
        if step > self._step or self.done == self.total:
            self._step = step
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """``[#####.....] 120/400 30% 12.3 tasks/s eta 0:00:21 2 errors``."""
        share = self.done / self.total if self.total else 1.0
        filled = int(share * BAR_WIDTH)
        elapsed = max(1e-9, self.clock() - self.started)
        rate = (self.done - self.resumed) / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 else "?"
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        errors = f", {self.errors} error{'s' if self.errors != 1 else ''}" if self.errors else ""
        return f"[{bar}] {self.done}/{self.total} {share:4.0%} {rate:.1f} tasks/s eta {eta}{errors}"

    def finish(self) -> None:
        """End the bar's line."""
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()
