"""Exact, thread-safe usage accounting and budgets that span a whole recursion tree.

Every RLM run owns a :class:`UsageLedger`. A child RLM's ledger has its parent's as
``parent``: each recorded call is added to the child and to every ancestor, and a limit set
anywhere up the chain applies to the whole subtree. Before each LM call the caller asks
:meth:`UsageLedger.check`, so once a budget is spent no new call starts and the tree
overshoots by at most the calls already in flight.

A call's cost is the one its backend reported, else the cost at its model's price
(:mod:`rlm_core.pricing`), else unknown. With ``max_budget`` set, a call of unknown cost
stops the tree like a spent budget: spending that cannot be measured cannot be bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlm_core.backends.base import LMUsage
from rlm_core.exceptions import (
    BudgetExceededError,
    ConfigurationError,
    LimitExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm_core.plugins import get_registry
from rlm_core.pricing import lookup_price, price_call
from rlm_core.types import ModelUsageSummary, UsageSummary


@dataclass(frozen=True)
class Limits:
    """Budgets of one ledger: USD, total tokens and a monotonic-clock deadline."""

    max_budget: float | None = None
    max_tokens: int | None = None
    deadline: float | None = None
    timeout: float | None = None
    started: float = 0.0


@dataclass
class _Tally:
    """Running totals of one model (at one depth, or over all depths)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    known_cost: float = 0.0
    unpriced_calls: int = 0

    def add(self, usage: LMUsage, cost: float | None) -> None:
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.known_cost += cost

    def summary(self) -> ModelUsageSummary:
        return ModelUsageSummary(
            total_calls=self.calls,
            total_input_tokens=self.input_tokens,
            total_output_tokens=self.output_tokens,
            total_cost=None if self.unpriced_calls else self.known_cost,
            total_cached_input_tokens=self.cached_input_tokens,
            total_cache_write_tokens=self.cache_write_tokens,
            unpriced_calls=self.unpriced_calls,
        )


class UsageLedger:
    """Per-model (and per-depth) calls, tokens and cost of one RLM run and its subtree."""

    def __init__(self, limits: Limits | None = None, parent: UsageLedger | None = None) -> None:
        self.limits = limits or Limits()
        self.parent = parent
        self._lock = threading.Lock()
        self._models: dict[str, _Tally] = {}
        self._depths: dict[int, dict[str, _Tally]] = {}

    def record(self, model: str, usage: LMUsage, depth: int = 0) -> ModelUsageSummary:
        """Add one call at ``depth`` here and in every ancestor; return that call's usage.

        Its cost is ``usage.cost`` when the backend reported one, else the cost at
        ``model``'s price, else unknown (``None``).
        """
        cost = price_call(model, usage)
        ledger: UsageLedger | None = self
        while ledger is not None:
            ledger._add(model, usage, cost, depth)
            ledger = ledger.parent
        call = _Tally()
        call.add(usage, cost)
        return call.summary()

    def _add(self, model: str, usage: LMUsage, cost: float | None, depth: int) -> None:
        with self._lock:
            self._models.setdefault(model, _Tally()).add(usage, cost)
            self._depths.setdefault(depth, {}).setdefault(model, _Tally()).add(usage, cost)

    def summary(self) -> UsageSummary:
        """A snapshot copy of the usage recorded so far, per model and per depth."""
        with self._lock:
            return UsageSummary(
                {m: t.summary() for m, t in self._models.items()},
                {
                    d: UsageSummary({m: t.summary() for m, t in models.items()})
                    for d, models in sorted(self._depths.items())
                },
            )

    def spent(self) -> tuple[float, int]:
        """``(cost in USD of the calls whose cost is known, input + output tokens)``."""
        with self._lock:
            cost = sum(t.known_cost for t in self._models.values())
            tokens = sum(t.input_tokens + t.output_tokens for t in self._models.values())
        return cost, tokens

    def unpriced_models(self) -> list[str]:
        """Models with calls of unknown cost (sorted)."""
        with self._lock:
            return sorted(m for m, t in self._models.items() if t.unpriced_calls)

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
            if limits.max_budget is not None:
                error = _budget_error(ledger, cost, limits.max_budget, partial_answer)
                if error is not None:
                    return error
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


def _budget_error(
    ledger: UsageLedger, cost: float, budget: float, partial_answer: str | None
) -> BudgetExceededError | None:
    if cost >= budget:
        return BudgetExceededError(cost, budget, partial_answer=partial_answer)
    unpriced = ledger.unpriced_models()
    if not unpriced:
        return None
    names = ", ".join(map(repr, unpriced))
    return BudgetExceededError(
        cost,
        budget,
        f"Budget cannot be enforced: the cost of calls to {names} is unknown (no price is "
        f"known for the model and its backend reported none); ${cost:.6f} of the "
        f"${budget:.6f} budget is spent on calls of known cost. Set the price with "
        "rlm_core.register_prices({model: {'input': ..., 'output': ...}})",
        partial_answer,
    )


def check_budget_is_priced(backends: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`ConfigurationError` unless each ``(backend name, backend_kwargs)``
    reports its calls' cost or its configured model has a price (see
    :mod:`rlm_core.pricing`), so that ``max_budget`` can be enforced."""
    registry = get_registry()
    missing: list[str] = []
    for name, kwargs in backends:
        factory = registry.backend(name).factory
        reports_cost = getattr(factory, "reports_cost", None)
        if callable(reports_cost) and reports_cost(kwargs):
            continue
        configured = getattr(factory, "configured_model", None)
        model = configured(kwargs) if callable(configured) else kwargs.get("model_name")
        if not model:
            missing.append(f"backend {name!r} (no model_name)")
        elif lookup_price(model) is None:
            missing.append(f"{model!r} (backend {name!r})")
    if missing:
        raise ConfigurationError(
            f"max_budget needs the cost of every call, but no price is known for "
            f"{', '.join(missing)} and the backend does not report costs. Set it with "
            "rlm_core.register_prices({model: {'input': ..., 'output': ...}}) (USD per "
            "million tokens; 0 for a free self-hosted model), or leave max_budget None"
        )
