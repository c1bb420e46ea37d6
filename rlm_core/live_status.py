"""A status line redrawn in place on a terminal, with lines printed above it (``rich``).

Imported only by :class:`rlm_core.progress.Progress` when it draws on a terminal, so
neither ``import rlm_core`` nor a run without a live display imports ``rich``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

_STYLES = ("bold", "")


class LiveStatus:
    """Keeps a few status lines at the bottom of ``stream``.

    ``lines`` is called on each redraw (``refresh_per_second`` times a second, from a
    background thread) and returns the lines; it is never called per event. Lines wider
    than the terminal are cut, so the block keeps its height.
    """

    def __init__(
        self, stream: TextIO, lines: Callable[[], list[str]], refresh_per_second: float
    ) -> None:
        self._lines = lines
        self._console = Console(
            file=stream, force_terminal=True, highlight=False, markup=False, emoji=False
        )
        self._live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=refresh_per_second,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def _render(self) -> Text:
        try:
            lines = self._lines()
        except Exception as exc:  # a redraw must never end the refresh thread
            lines = [f"progress unavailable ({type(exc).__name__})"]
        block = Text("\n").join(
            Text(line, style=_STYLES[min(i, len(_STYLES) - 1)]) for i, line in enumerate(lines)
        )
        block.no_wrap = True
        block.overflow = "crop"
        return block

    def start(self) -> None:
        """Draw the status lines and start redrawing them."""
        self._live.start(refresh=True)

    def print(self, text: str) -> None:
        """Print ``text`` (one or more lines, as is) above the status lines."""
        self._console.out(text, highlight=False)

    def stop(self) -> None:
        """Draw the status lines a last time and leave them on the screen."""
        self._live.stop()
