"""The summary of a run: each configuration's score, cost, tokens, latency and errors, side
by side, and its score per task family and context length."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlm_core.eval.results import TaskResult
from rlm_core.eval.suites import length_label


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating between ranks; 0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class ConfigSummary:
    """One configuration's figures over the tasks it ran."""

    name: str
    tasks: int = 0
    score: float = 0.0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    by_length: dict[tuple[str, int], float] = field(default_factory=dict)
    """Mean score per (task family, context length)."""


def summarize_config(name: str, results: Sequence[TaskResult]) -> ConfigSummary:
    """The figures of one configuration's results."""
    summary = ConfigSummary(name=name, tasks=len(results))
    if not results:
        return summary
    summary.score = sum(r.score for r in results) / len(results)
    types = Counter(r.error_type for r in results if r.error_type)
    summary.errors = sum(types.values())
    summary.error_types = dict(sorted(types.items()))
    costs = [r.cost for r in results if r.cost is not None]
    summary.cost = sum(costs) if costs else None
    summary.input_tokens = sum(r.input_tokens for r in results)
    summary.output_tokens = sum(r.output_tokens for r in results)
    summary.calls = sum(r.calls for r in results)
    latencies = [r.latency for r in results if not r.error_type]
    summary.latency_p50 = percentile(latencies, 50)
    summary.latency_p95 = percentile(latencies, 95)
    groups: dict[tuple[str, int], list[float]] = {}
    for r in results:
        groups.setdefault((r.family, r.context_length), []).append(r.score)
    summary.by_length = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    return summary


@dataclass
class Summary:
    """Every configuration's :class:`ConfigSummary`, in the order they were given."""

    configs: list[ConfigSummary]

    def scores(self) -> dict[str, float]:
        """Mean score per configuration."""
        return {c.name: c.score for c in self.configs}

    def to_markdown(self) -> str:
        """Two tables: the figures side by side, and the score per family and length."""
        names = [c.name for c in self.configs]
        head = "| | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names)
        rows = [
            ("tasks", [str(c.tasks) for c in self.configs]),
            ("score (mean)", [f"{c.score:.3f}" for c in self.configs]),
            ("errors", [str(c.errors) for c in self.configs]),
            ("cost (USD)", [f"{c.cost:.4f}" if c.cost is not None else "—" for c in self.configs]),
            (
                "tokens in / out",
                [f"{c.input_tokens:,} / {c.output_tokens:,}" for c in self.configs],
            ),
            ("LM calls", [f"{c.calls:,}" for c in self.configs]),
            (
                "latency p50 / p95 (s)",
                [f"{c.latency_p50:.3g} / {c.latency_p95:.3g}" for c in self.configs],
            ),
            (
                "errors by type",
                [
                    ", ".join(f"{k}: {v}" for k, v in c.error_types.items()) or "none"
                    for c in self.configs
                ],
            ),
        ]
        lines = [head] + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
        keys = sorted({k for c in self.configs for k in c.by_length})
        detail = [
            "| family | context length | " + " | ".join(names) + " |",
            "| --- | ---: |" + " ---: |" * len(names),
        ]
        for family, length in keys:
            cells = [
                f"{c.by_length[(family, length)]:.3f}" if (family, length) in c.by_length else "—"
                for c in self.configs
            ]
            detail.append(f"| {family} | {length_label(length)} | " + " | ".join(cells) + " |")
        return (
            "\n".join(lines)
            + "\n\nScore by task family and context length (tokens):\n\n"
            + ("\n".join(detail))
        )


def summarize(results: Sequence[TaskResult], config_names: Sequence[str]) -> Summary:
    """The summary of ``results`` for ``config_names``, in that order."""
    by_config: dict[str, list[TaskResult]] = {name: [] for name in config_names}
    for result in results:
        if result.config in by_config:
            by_config[result.config].append(result)
    return Summary([summarize_config(name, by_config[name]) for name in config_names])
