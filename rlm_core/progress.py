"""Progress of an RLM run: counters fed by the loop and shown on the console.

``RLM(verbose=True)`` owns a :class:`Progress`. When its output is a terminal it keeps
status lines (iteration, elapsed time, tokens, cost, sub-calls, child RLMs) at the bottom,
redrawn a few times a second by a background thread, and prints each iteration's output
above them. Elsewhere (pipes, files, CI) it prints the plain lines of
:class:`~rlm_core.verbose.VerbosePrinter`. Child RLMs report to the :class:`Progress` of
their top-level completion, so a whole recursion tree shares one display.

Events only update counters under a lock; nothing is rendered per event. The terminal
renderer (:mod:`rlm_core.live_status`, built on ``rich``) is imported only when status
lines are actually drawn.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO

from rlm_core.verbose import VerbosePrinter

if TYPE_CHECKING:
    from rlm_core.live_status import LiveStatus
    from rlm_core.types import RLMIteration, RLMMetadata, UsageSummary
    from rlm_core.usage import UsageLedger

REFRESH_PER_SECOND = 4.0
"""How often the status lines are redrawn."""

_one_live_display = threading.Lock()


@dataclass(frozen=True)
class ProgressSnapshot:
    """What the status lines show at one moment.

    ``cost`` sums the known costs and is ``None`` when no call's cost is known;
    ``cost_partial`` is true when some calls' cost is unknown. Token fields are ``None``
    when usage cannot be read.
    """

    iteration: int = 0
    max_iterations: int = 0
    subcalls_running: int = 0
    subcalls_done: int = 0
    subcalls_failed: int = 0
    children_running: dict[int, int] = field(default_factory=dict)
    children_done: int = 0
    children_failed: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    cost_partial: bool = False
    elapsed: float = 0.0


class ProgressState:
    """Thread-safe counters of one top-level completion and every child RLM under it."""

    def __init__(self, depth: int = 0, max_iterations: int = 0) -> None:
        self.depth = depth
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._max_iterations = max_iterations
        self._iteration = 0
        self._subcalls_running = 0
        self._subcalls_done = 0
        self._subcalls_failed = 0
        self._children_running: dict[int, int] = {}
        self._children_done = 0
        self._children_failed = 0
        self._ledger: UsageLedger | None = None

    def track(self, ledger: UsageLedger) -> None:
        """Read tokens and cost from ``ledger`` (the top-level run's, which sums its tree)."""
        self._ledger = ledger

    def iteration_started(self, depth: int, number: int, max_iterations: int) -> None:
        """Iteration ``number`` of an RLM at ``depth`` began (only the top level is shown)."""
        if depth == self.depth:
            with self._lock:
                self._iteration = number
                self._max_iterations = max_iterations

    def subcall_started(self) -> None:
        """A plain sub-LM call began."""
        with self._lock:
            self._subcalls_running += 1

    def subcall_finished(self, failed: bool) -> None:
        """A plain sub-LM call ended (``failed``: it returned an error)."""
        with self._lock:
            self._subcalls_running -= 1
            self._subcalls_done += 1
            self._subcalls_failed += failed

    def child_started(self, depth: int) -> None:
        """A child RLM at ``depth`` began."""
        with self._lock:
            self._children_running[depth] = self._children_running.get(depth, 0) + 1

    def child_finished(self, depth: int, failed: bool) -> None:
        """A child RLM at ``depth`` ended (``failed``: it stopped with an error)."""
        with self._lock:
            left = self._children_running.get(depth, 0) - 1
            if left > 0:
                self._children_running[depth] = left
            else:
                self._children_running.pop(depth, None)
            self._children_done += 1
            self._children_failed += failed

    def snapshot(self) -> ProgressSnapshot:
        """The counters and usage now."""
        with self._lock:
            counts = ProgressSnapshot(
                iteration=self._iteration,
                max_iterations=self._max_iterations,
                subcalls_running=self._subcalls_running,
                subcalls_done=self._subcalls_done,
                subcalls_failed=self._subcalls_failed,
                children_running=dict(sorted(self._children_running.items())),
                children_done=self._children_done,
                children_failed=self._children_failed,
            )
        tokens_in, tokens_out, cost, partial = _usage(self._ledger)
        return replace(
            counts,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=cost,
            cost_partial=partial,
            elapsed=time.monotonic() - self.started,
        )


def _usage(ledger: UsageLedger | None) -> tuple[int | None, int | None, float | None, bool]:
    """``(input tokens, output tokens, known cost, some cost unknown)`` from ``ledger``.

    The known cost sums the models whose cost is known; it is ``None`` when none is.
    """
    if ledger is None:
        return 0, 0, None, False
    try:
        summary: UsageSummary = ledger.summary()
        models = [m for m in summary.model_usage_summaries.values() if m.total_calls]
        known = [m.total_cost for m in models if m.total_cost is not None]
        cost = sum(known) if known else None
        partial = cost is not None and len(known) < len(models)
        return summary.total_input_tokens, summary.total_output_tokens, cost, partial
    except Exception:
        return None, None, None, False


def format_cost(cost: float | None, partial: bool = False) -> str:
    """``$0.0123``; ``unknown`` when no cost is known; ``$0.0123+?`` when part is unknown."""
    if cost is None:
        return "unknown"
    text = f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"
    return text + "+?" if partial else text


def format_elapsed(seconds: float) -> str:
    """``42.0s`` under a minute, else ``3m05s`` or ``1h02m05s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def status_lines(snap: ProgressSnapshot) -> list[str]:
    """The status lines: the run (iteration, time, tokens, cost), then its calls."""
    if snap.iteration:
        iteration = f"iteration {snap.iteration}/{snap.max_iterations}"
    else:
        iteration = "starting"
    if snap.input_tokens is None or snap.output_tokens is None:
        tokens = "tokens ?"
    else:
        tokens = f"tokens {snap.input_tokens:,} in / {snap.output_tokens:,} out"
    cost = f"cost {format_cost(snap.cost, snap.cost_partial)}"
    subcalls = f"sub-calls {snap.subcalls_running} running, {snap.subcalls_done} done"
    if snap.subcalls_failed:
        subcalls += f", {snap.subcalls_failed} failed"
    running = sum(snap.children_running.values())
    children = f"children {running} running"
    if running:
        where = ", ".join(f"depth {d}: {n}" for d, n in snap.children_running.items())
        children += f" ({where})"
    children += f", {snap.children_done} done"
    if snap.children_failed:
        children += f", {snap.children_failed} failed"
    return [
        " | ".join([iteration, format_elapsed(snap.elapsed), tokens, cost]),
        " | ".join([subcalls, children]),
    ]


def _draws_live(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can redraw status lines."""
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
    return bool(is_tty) and os.environ.get("TERM", "") != "dumb"


class Progress:
    """The console output of an RLM: nothing, plain lines, or live status lines.

    ``Progress(verbose)`` is what ``RLM(verbose=...)`` creates. ``False`` prints nothing.
    ``True`` prints the run's metadata, each iteration and the final answer; when the
    stream is a terminal it also keeps live status lines below them. ``status=True``
    without ``verbose`` shows only the status lines, and only on a terminal. ``stream`` is
    ``sys.stdout`` (at the time of each completion) unless given.
    """

    def __init__(
        self, verbose: bool = False, *, status: bool | None = None, stream: TextIO | None = None
    ) -> None:
        self.verbose = verbose
        self.status = verbose if status is None else status
        self._stream = stream
        self._printer = VerbosePrinter(enabled=verbose, write=self._write)
        self._state: ProgressState | None = None
        self._live: LiveStatus | None = None
        self._is_child_view = False
        self._active = False

    @property
    def state(self) -> ProgressState | None:
        """The counters of the current (or last) completion; ``None`` when quiet."""
        return self._state

    def child(self) -> Progress:
        """What a child RLM reports through: the same counters, no printing, no display."""
        view = Progress()
        view._state = self._state
        view._is_child_view = True
        return view

    # -- a completion -------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, depth: int = 0, max_iterations: int = 0) -> Iterator[None]:
        """Show progress for one top-level completion (a no-op for child RLMs and when
        quiet)."""
        if self._active or self._is_child_view or not (self.verbose or self.status):
            yield
            return
        self._active = True
        self._state = ProgressState(depth, max_iterations)
        stream = self._stream or sys.stdout
        if self.status and _draws_live(stream):
            self._start_live(stream, self._state)
        try:
            yield
        finally:
            self._active = False
            self._stop_live()

    def track(self, ledger: UsageLedger) -> None:
        """Take tokens and cost from the top-level run's ``ledger``."""
        if self._state is not None and not self._is_child_view:
            self._state.track(ledger)

    def _start_live(self, stream: TextIO, state: ProgressState) -> None:
        if not _one_live_display.acquire(blocking=False):
            return  # another completion in this process already draws one
        try:
            from rlm_core.live_status import LiveStatus

            live = LiveStatus(stream, lambda: status_lines(state.snapshot()), REFRESH_PER_SECOND)
            live.start()
        except Exception:  # no rich, or a terminal it cannot drive: plain lines only
            _one_live_display.release()
            return
        self._live = live

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.stop()
        finally:
            _one_live_display.release()

    def _write(self, text: str) -> None:
        live = self._live
        if live is not None:
            live.print(text)
            return
        stream = self._stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()

    # -- events (any thread) ------------------------------------------------------------

    def iteration_started(self, depth: int, number: int, max_iterations: int) -> None:
        """Iteration ``number`` of the RLM at ``depth`` began."""
        state = self._state
        if state is not None:
            state.iteration_started(depth, number, max_iterations)

    def subcall_started(self) -> None:
        """A plain sub-LM call began."""
        state = self._state
        if state is not None:
            state.subcall_started()

    def subcall_finished(self, failed: bool) -> None:
        """A plain sub-LM call ended."""
        state = self._state
        if state is not None:
            state.subcall_finished(failed)

    def child_started(self, depth: int) -> None:
        """A child RLM at ``depth`` began."""
        state = self._state
        if state is not None:
            state.child_started(depth)

    def child_finished(self, depth: int, failed: bool) -> None:
        """A child RLM at ``depth`` ended."""
        state = self._state
        if state is not None:
            state.child_finished(depth, failed)

    # -- lines (the top-level RLM's thread) ---------------------------------------------

    def print_metadata(self, metadata: RLMMetadata) -> None:
        """The run configuration."""
        self._printer.print_metadata(metadata)

    def print_iteration(self, iteration: RLMIteration, number: int) -> None:
        """One root turn with its cells."""
        self._printer.print_iteration(iteration, number)

    def print_compaction(self, tokens: int, limit: int) -> None:
        """A compaction happened."""
        self._printer.print_compaction(tokens, limit)

    def print_limit(self, kind: str, details: str) -> None:
        """A limit stopped the run."""
        self._printer.print_limit(kind, details)

    def print_final_answer(self, answer: str, seconds: float, usage: UsageSummary) -> None:
        """The answer and the usage totals, below the last status lines."""
        self._stop_live()
        self._printer.print_final_answer(answer, seconds, usage)
