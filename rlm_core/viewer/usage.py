"""Calls, tokens and cost per model and per recursion depth, from a trajectory tree.

A cost the log does not know stays unknown: it is never counted as zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelTotals:
    """Usage of one model: token counts, the sum of the known costs, and how many of the
    calls have no known cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    known_cost: float = 0.0
    unknown_cost_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        """The fields, plus ``cost`` (``None`` when no part of it is known) and
        ``cost_unknown`` (whether a part is missing)."""
        all_unknown = self.unknown_cost_calls > 0 and self.unknown_cost_calls >= self.calls
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "known_cost": self.known_cost,
            "unknown_cost_calls": self.unknown_cost_calls,
            "cost": None if all_unknown else self.known_cost,
            "cost_unknown": self.unknown_cost_calls > 0,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelTotals:
        """Inverse of :meth:`to_json`."""
        return cls(
            calls=int(data["calls"]),
            input_tokens=int(data["input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            known_cost=float(data["known_cost"]),
            unknown_cost_calls=int(data["unknown_cost_calls"]),
        )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass
class Usage:
    """Usage per model name."""

    models: dict[str, ModelTotals] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Any) -> Usage:
        """Read a ``UsageSummary.to_dict()`` shape (``total_cost`` absent: unknown)."""
        usage = cls()
        per_model = summary.get("model_usage_summaries") if isinstance(summary, dict) else None
        for model, entry in (per_model or {}).items():
            if not isinstance(entry, dict):
                continue
            calls = _int(entry.get("total_calls"))
            cost = entry.get("total_cost")
            known = isinstance(cost, int | float) and not isinstance(cost, bool)
            usage.models[str(model)] = ModelTotals(
                calls=calls,
                input_tokens=_int(entry.get("total_input_tokens")),
                output_tokens=_int(entry.get("total_output_tokens")),
                known_cost=float(cost) if isinstance(cost, int | float) and known else 0.0,
                unknown_cost_calls=0 if known else max(calls, 1),
            )
        return usage

    def add(self, other: Usage) -> None:
        """Add ``other`` into this usage."""
        for model, t in other.models.items():
            mine = self.models.setdefault(model, ModelTotals())
            mine.calls += t.calls
            mine.input_tokens += t.input_tokens
            mine.output_tokens += t.output_tokens
            mine.known_cost += t.known_cost
            mine.unknown_cost_calls += t.unknown_cost_calls

    def minus(self, other: Usage) -> Usage:
        """This usage without ``other`` (counts floored at zero; a cost becomes unknown
        when either side does not know it)."""
        out = Usage()
        for model, t in self.models.items():
            o = other.models.get(model, ModelTotals())
            calls = max(t.calls - o.calls, 0)
            unknown = t.unknown_cost_calls > 0 or o.unknown_cost_calls > 0
            if calls == 0:
                continue
            out.models[model] = ModelTotals(
                calls=calls,
                input_tokens=max(t.input_tokens - o.input_tokens, 0),
                output_tokens=max(t.output_tokens - o.output_tokens, 0),
                known_cost=0.0 if unknown else max(t.known_cost - o.known_cost, 0.0),
                unknown_cost_calls=calls if unknown else 0,
            )
        return out

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{model: ModelTotals.to_json()}``."""
        return {m: t.to_json() for m, t in self.models.items()}


@dataclass
class _Table:
    cells: dict[tuple[int, str], ModelTotals] = field(default_factory=dict)
    sources: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)

    def add(self, depth: int, usage: Usage, source: str) -> None:
        for model, totals in usage.models.items():
            key = (depth, model)
            acc = Usage({model: self.cells.setdefault(key, ModelTotals())})
            acc.add(Usage({model: totals}))
            self.sources.setdefault(key, set()).add(source)

    def walk(self, trajectory: dict[str, Any], total: Usage | None) -> None:
        depth = int(trajectory["depth"])
        iterations = trajectory["iterations"]
        recorded = bool(iterations) and all(i["root_usage"] is not None for i in iterations)
        direct = Usage()
        for iteration in iterations:
            if recorded:
                self.add(depth, _usage(iteration["root_usage"]), "recorded")
            for cell in iteration["cells"]:
                for call in cell["calls"]:
                    usage = _usage(call["usage"])
                    if call["kind"] == "child":
                        self.walk(call["child"], usage)
                    else:
                        self.add(int(call["depth"]), usage, "recorded")
                        direct.add(usage)
        if recorded:
            return
        if total is None:
            self.missing.append({"depth": depth, "model": trajectory.get("model") or "unknown"})
        else:
            self.add(depth, total.minus(direct), "derived")


def _usage(data: dict[str, dict[str, Any]]) -> Usage:
    """Inverse of :meth:`Usage.to_json`."""
    return Usage({model: ModelTotals.from_json(t) for model, t in data.items()})


def usage_rows(tree: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows ``{depth, model, source, calls, input_tokens, output_tokens, cost,
    cost_unknown}`` per depth and model of a run tree, and the totals per model.

    ``source`` is ``"recorded"`` (from the log's usage records), ``"derived"`` (a child
    RLM's own calls in an ``rlms`` log: its total minus its sub-calls) or ``"missing"`` (an
    RLM whose own calls the log does not record; its numbers are ``None``).
    """
    table = _Table()
    table.walk(tree, None)
    rows: list[dict[str, Any]] = []
    per_model = Usage()
    for (depth, model), totals in sorted(table.cells.items()):
        sources = table.sources[(depth, model)]
        source = "derived" if "derived" in sources else "recorded"
        rows.append({"depth": depth, "model": model, "source": source, **totals.to_json()})
        per_model.add(Usage({model: totals}))
    for gap in table.missing:
        rows.append(
            {
                "depth": gap["depth"],
                "model": gap["model"],
                "source": "missing",
                "calls": None,
                "input_tokens": None,
                "output_tokens": None,
                "known_cost": None,
                "unknown_cost_calls": None,
                "cost": None,
                "cost_unknown": True,
            }
        )
    rows.sort(key=lambda r: (r["depth"], r["source"] == "missing", r["model"]))
    return rows, {"models": per_model.to_json(), "complete": not table.missing}
