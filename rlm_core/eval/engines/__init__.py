"""Engines: where tasks run. ``local`` runs them on threads of this process; ``ray`` runs
them as Ray tasks across a cluster. Both hand every result to the caller's ``sink`` as it
finishes, in the process that called them, so the result store has a single writer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rlm_core.eval.config import RunConfig
from rlm_core.eval.execute import run_task
from rlm_core.eval.results import TaskResult
from rlm_core.eval.tasks import Task

Job = tuple[Task, RunConfig]
Sink = Callable[[TaskResult], None]


@dataclass
class Plan:
    """What to run and how: the jobs (those not stored yet), where trajectories go, how
    many times a retryable failure is run again, and the request rates per provider."""

    jobs: list[Job]
    log_dir: str | None = None
    concurrency: int = 4
    retries: int = 2
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)


def rates_of(configs: list[RunConfig]) -> dict[str, tuple[float, float | None]]:
    """Provider key -> (requests per second, burst): the lowest rate any configuration
    sets for that provider."""
    rates: dict[str, tuple[float, float | None]] = {}
    for config in configs:
        if config.rate_limit is None:
            continue
        current = rates.get(config.provider)
        if current is None or config.rate_limit < current[0]:
            rates[config.provider] = (config.rate_limit, config.rate_burst)
    return rates


def run_with_retries(
    task: Task, config: RunConfig, log_dir: str | None, retries: int
) -> TaskResult:
    """Run a task, again (up to ``retries`` times) while its failure is retryable."""
    attempt = 1
    while True:
        result = run_task(task, config, log_dir)
        result.attempts = attempt
        if not result.retryable or attempt > retries:
            return result
        attempt += 1
