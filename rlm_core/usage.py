"""Exact, thread-safe usage accounting and budgets that span a whole recursion tree.

Every RLM run owns a :class:`UsageLedger`. A child RLM's ledger has its parent's as
``parent``: each recorded call is added to the child and to every ancestor, and a limit set
anywhere up the chain applies to the whole subtree. Before each LM call the caller asks
:meth:`UsageLedger.check`, so once a budget is spent no new call starts and the tree
overshoots by at most the calls already in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rlm_core.backends.base import LMUsage
from rlm_core.exceptions import (
    BudgetExceededError,
    LimitExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm_core.types import ModelUsageSummary, UsageSummary


@dataclass(frozen=True)
class Limits:
    """Budgets of one ledger: USD, total tokens and a monotonic-clock deadline."""

    max_budget: float | None = None
    max_tokens: int | None = None
    deadline: float | None = None
    timeout: float | None = None
    started: float = 0.0


class UsageLedger:
    """Per-model calls, tokens and cost of one RLM run and its subtree."""

    def __init__(self, limits: Limits | None = None, parent: UsageLedger | None = None) -> None:
        self.limits = limits or Limits()
        self.parent = parent
        self._lock = threading.Lock()
        self._models: dict[str, ModelUsageSummary] = {}

    def record(self, model: str, usage: LMUsage) -> None:
        """Add one call's usage here and in every ancestor."""
        ledger: UsageLedger | None = self
        while ledger is not None:
            ledger._add(model, usage)
            ledger = ledger.parent

    def _add(self, model: str, usage: LMUsage) -> None:
        with self._lock:
            entry = self._models.get(model)
            if entry is None:
                entry = self._models[model] = ModelUsageSummary()
            entry.total_calls += 1
            entry.total_input_tokens += usage.input_tokens
            entry.total_output_tokens += usage.output_tokens
            if usage.cost is not None:
                entry.total_cost = (entry.total_cost or 0.0) + usage.cost

    def summary(self) -> UsageSummary:
        """A snapshot copy of the usage recorded so far."""
        with self._lock:
            return UsageSummary(
                {
                    m: ModelUsageSummary(
                        s.total_calls, s.total_input_tokens, s.total_output_tokens, s.total_cost
                    )
                    for m, s in self._models.items()
                }
            )

    def spent(self) -> tuple[float, int]:
        """``(cost in USD, input + output tokens)`` so far."""
        with self._lock:
            cost = sum(s.total_cost or 0.0 for s in self._models.values())
            tokens = sum(
                s.total_input_tokens + s.total_output_tokens for s in self._models.values()
            )
        return cost, tokens

    def deadline(self) -> float | None:
        """The earliest deadline of this ledger and its ancestors (monotonic clock)."""
        deadlines = [
            ledger.limits.deadline for ledger in self._chain() if ledger.limits.deadline is not None
        ]
        return min(deadlines) if deadlines else None

    def remaining_budget(self) -> float | None:
        """USD left before the tightest cost limit up the chain, or ``None`` if unlimited."""
        left = [
            ledger.limits.max_budget - ledger.spent()[0]
            for ledger in self._chain()
            if ledger.limits.max_budget is not None
        ]
        return min(left) if left else None

    def _chain(self) -> list[UsageLedger]:
        chain: list[UsageLedger] = []
        ledger: UsageLedger | None = self
        while ledger is not None:
            chain.append(ledger)
            ledger = ledger.parent
        return chain

    def exceeded(self, partial_answer: str | None = None) -> LimitExceededError | None:
        """The limit error to raise if any budget up the chain is used up, else ``None``."""
        now = time.monotonic()
        for ledger in self._chain():
            limits = ledger.limits
            cost, tokens = ledger.spent()
            if limits.max_budget is not None and cost >= limits.max_budget:
                return BudgetExceededError(cost, limits.max_budget, partial_answer=partial_answer)
            if limits.max_tokens is not None and tokens >= limits.max_tokens:
                return TokenLimitExceededError(tokens, limits.max_tokens, partial_answer)
            if limits.deadline is not None and now >= limits.deadline:
                elapsed = now - limits.started
                return TimeoutExceededError(elapsed, limits.timeout or elapsed, partial_answer)
        return None

    def check(self, partial_answer: str | None = None) -> None:
        """Raise the limit error if any budget up the chain is used up."""
        error = self.exceeded(partial_answer)
        if error is not None:
            raise error
