"""``rlm_core.eval.run``: run a suite under several configurations, score it, summarise it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from rlm_core.eval.config import (
    RunConfig,
    check,
    check_unique_names,
    config_from_dict,
    load_config,
)
from rlm_core.eval.engines import Job, Plan, Sink, rates_of
from rlm_core.eval.plot import plot_scores
from rlm_core.eval.progress import Progress
from rlm_core.eval.report import Summary, summarize
from rlm_core.eval.results import TaskResult
from rlm_core.eval.store import ResultStore
from rlm_core.eval.suites import Suite, load_suite
from rlm_core.eval.tasks import Task, check_unique, task_from_dict
from rlm_core.exceptions import ConfigurationError

SUMMARY = "summary.md"
PLOT = "scores.png"
TRAJECTORIES = "trajectories"

SuiteSpec = str | Path | Suite | Sequence[Task | Mapping[str, Any]]
ConfigSpec = RunConfig | Mapping[str, Any] | str | Path


class Engine(Protocol):
    """Where tasks run (:class:`~rlm_core.eval.engines.local.LocalEngine`,
    :class:`~rlm_core.eval.engines.ray_engine.RayEngine`)."""

    name: str

    def run(self, plan: Plan, sink: Sink) -> None:
        """Run the plan's jobs, handing each result to ``sink``."""

    def limiter_stats(self) -> dict[str, dict[str, float]]:
        """Rate-limiter reservations per provider in the last run."""


@dataclass
class EvalRun:
    """What :func:`run` did: every result of the suite under each configuration (also
    those stored by an earlier, interrupted run), their summary and where files went."""

    suite: str
    configs: list[RunConfig]
    results: list[TaskResult]
    summary: Summary
    ran: int
    resumed: int
    out_dir: Path | None = None
    plot_path: Path | None = None
    plot_message: str = ""
    limiter_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def scores(self) -> dict[str, float]:
        """Mean score per configuration."""
        return self.summary.scores()

    def to_markdown(self) -> str:
        """The summary tables."""
        return self.summary.to_markdown()


def to_suite(suite: SuiteSpec, n: int | None, lengths: Sequence[int] | None, seed: int) -> Suite:
    """A :class:`Suite` from a name, a path, a suite, or a list of tasks or task dicts."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, str | Path):
        return load_suite(str(suite), n=n, lengths=lengths, seed=seed)
    tasks = [
        t if isinstance(t, Task) else task_from_dict(t, f"task {i + 1}")
        for i, t in enumerate(suite)
    ]
    check_unique(tasks, "suite")
    return Suite("tasks", tasks)


def to_configs(configs: ConfigSpec | Sequence[ConfigSpec], baseline: bool) -> list[RunConfig]:
    """Configurations from objects, dicts or TOML paths; with ``baseline``, each one's
    plain twin follows it."""
    items = [configs] if isinstance(configs, RunConfig | Mapping | str | Path) else configs
    out: list[RunConfig] = []
    for i, item in enumerate(items):
        if isinstance(item, RunConfig):
            config = item
        elif isinstance(item, Mapping):
            config = config_from_dict(item, f"config{i + 1}", f"configuration {i + 1}")
        else:
            config = load_config(item)
        out.append(config)
        if baseline and config.mode != "plain":
            out.append(config.plain())
    if not out:
        raise ConfigurationError("no configuration given")
    check_unique_names(out)
    return out


def make_engine(engine: str | Engine, address: str | None) -> Engine:
    """The engine called ``engine`` (``"local"`` or ``"ray"``), or ``engine`` itself."""
    if not isinstance(engine, str):
        return engine
    if engine == "local":
        from rlm_core.eval.engines.local import LocalEngine

        return LocalEngine()
    if engine == "ray":
        from rlm_core.eval.engines.ray_engine import RayEngine, import_ray

        import_ray()
        return RayEngine(address)
    raise ConfigurationError(f"unknown engine {engine!r}; use 'local' or 'ray'")


def run(
    suite: SuiteSpec,
    configs: ConfigSpec | Sequence[ConfigSpec],
    engine: str | Engine = "local",
    *,
    out_dir: str | Path | None = None,
    n: int | None = None,
    lengths: Sequence[int] | None = None,
    seed: int = 0,
    concurrency: int = 4,
    retries: int = 2,
    address: str | None = None,
    baseline: bool = False,
    progress: TextIO | None = None,
    plot: bool = True,
    trajectories: bool = True,
) -> EvalRun:
    """Run every task of ``suite`` under every configuration and score it.

    ``suite``: a bundled suite's name (``"niah"``, ``"builtin:oolong"``, ...), a suite file,
    a :class:`Suite` or a list of tasks (or task dicts). ``n`` and ``lengths`` (tokens)
    size a bundled suite; ``n`` keeps the first ``n`` tasks per length of a file.
    ``configs``: :class:`RunConfig` objects, dicts or TOML paths; ``baseline`` adds each
    one's plain twin (the same model without the REPL). ``engine``: ``"local"`` (threads)
    or ``"ray"`` (``address`` of a cluster; none starts a local one). ``concurrency``: tasks
    at once (on Ray: per node). ``retries``: further runs of a task whose failure is
    retryable.

    With ``out_dir``, results are appended to ``out_dir/results.jsonl`` as tasks finish and a
    rerun skips what is stored; the summary goes to ``summary.md``, the plot to
    ``scores.png`` and each task's trajectory under ``trajectories/``. Without it, results
    stay in memory. ``progress`` is a stream for the progress bar.
    """
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    if retries < 0:
        raise ConfigurationError(f"retries must be at least 0, not {retries}")
    the_suite = to_suite(suite, n, lengths, seed)
    the_configs = to_configs(configs, baseline)
    for config in the_configs:
        check(config)
    the_engine = make_engine(engine, address)
    keys = [(c.name, t.id) for t in the_suite.tasks for c in the_configs]
    with ResultStore(out_dir) as store:
        store.check_configs(the_configs)
        jobs: list[Job] = [
            (t, c) for t in the_suite.tasks for c in the_configs if (c.name, t.id) not in store
        ]
        resumed = len(keys) - len(jobs)
        log_dir = None
        if store.out_dir is not None and trajectories:
            log_dir = str((store.out_dir / TRAJECTORIES).resolve())
        bar = Progress(len(keys), resumed, progress)

        def sink(result: TaskResult) -> None:
            store.append(result)
            bar.advance(result)

        plan = Plan(jobs, log_dir, concurrency, retries, rates_of(the_configs))
        try:
            the_engine.run(plan, sink)
        finally:
            bar.finish()
        results = store.results(keys)
    summary = summarize(results, [c.name for c in the_configs])
    done = EvalRun(
        suite=the_suite.name,
        configs=the_configs,
        results=results,
        summary=summary,
        ran=len(jobs),
        resumed=resumed,
        out_dir=store.out_dir,
        limiter_stats=the_engine.limiter_stats(),
    )
    if store.out_dir is not None:
        (store.out_dir / SUMMARY).write_text(summary.to_markdown() + "\n", encoding="utf-8")
        if plot:
            done.plot_path, done.plot_message = plot_scores(summary, store.out_dir / PLOT)
    return done
