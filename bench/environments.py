"""Workload 10: what each local environment costs to start and per cell, and what it isolates.

For ``local``, ``subprocess``, ``bwrap``, ``docker`` (through podman's Docker-API service
and a local image, as the rlm-docker tests run it) and ``ipython`` (both kernel modes):

* **first start**: the first ``start`` of that kind in a process (imports, the fork
  server, a first pre-started agent, the engine's first container);
* **start**: construct and ``start`` a new environment, median of N;
* **stop**: ``close``, median of N;
* **cell**: one ``x = x + 1`` cell, median of 200 in one environment;
* **sub-call cell**: one ``llm_query`` (answered at once by the host), median of 200.

    .venv/bin/python bench/environments.py                     # every kind, a table
    .venv/bin/python bench/environments.py --variant bwrap --emit   # one kind, JSON samples

``bench/run.py`` runs it as workload 10 (``--only envs``), one worker per kind, and writes
its section into ``bench/results/latest.md``. A kind that cannot run here (no bubblewrap,
no podman) is reported as such, not measured. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from _common import emit, emit_info
from wan import InstantSubcalls

ROOT = Path(__file__).resolve().parents[1]
CELLS = 200

METHOD = (
    f"Medians: a new environment constructed and started (the first start of each kind in "
    f"a process apart), and closed; {CELLS} cells of each kind in one environment, the host "
    "answering `llm_query` at once. `docker` runs through podman's Docker-API service with "
    "the rlm-docker tests' local image (a real Docker engine starts containers faster)."
)
"""How the numbers are made, for the report."""


@dataclass(frozen=True)
class Kind:
    """One environment as measured, and what it isolates (for the table)."""

    name: str
    settings: dict[str, Any]
    isolates: str


KINDS: dict[str, Kind] = {
    "local": Kind("local", {}, "nothing: cells run in the host's interpreter"),
    "subprocess": Kind(
        "subprocess",
        {},
        "the host's memory (a child process: crashes, timeouts and memory limits are its own); "
        "same user, files and network",
    ),
    "bwrap": Kind(
        "bwrap",
        {},
        "every namespace (user, pid, mount, network, ipc, uts): no host files but a "
        "read-only runtime, no host processes, no network, bounded /tmp",
    ),
    "docker": Kind(
        "docker",
        {},
        "a container: its own root file system, processes and (by default) no network; "
        "memory, CPU and process limits",
    ),
    "ipython": Kind("ipython", {}, "nothing (in_process): the host's interpreter"),
    "ipython-subprocess": Kind(
        "ipython", {"kernel_mode": "subprocess"}, "as `subprocess` (the same agent, IPython cells)"
    ),
}
"""Every kind measured, by variant name (``--variant``)."""


@contextmanager
def docker_engine(settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Podman's Docker-API service and the rlm-docker tests' local image; the settings
    that use them. ``RuntimeError`` when no engine can run here."""
    sys.path.insert(0, str(ROOT / "plugins" / "rlm-docker" / "tests"))
    from docker_engine import build_image, start_engine, unavailable

    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    engine = start_engine()
    try:
        with mock.patch.dict(os.environ, engine.environ):
            yield {**settings, "image": build_image(engine.environ), "pull": "never"}
    finally:
        engine.stop()


@contextmanager
def prepared(variant: str) -> Iterator[dict[str, Any]]:
    """The settings to measure ``variant`` with (and its engine, for ``docker``)."""
    settings = dict(KINDS[variant].settings)
    if variant == "docker":
        with docker_engine(settings) as ready:
            yield ready
    else:
        yield settings


def measure(variant: str, starts: int) -> dict[str, list[float]]:
    """Every sample of one kind, in seconds."""
    from rlm_core.environments.base import Environment, Session
    from rlm_core.plugins import get_registry

    kind = KINDS[variant]
    factory: Callable[..., Environment] = get_registry().environment(kind.name).factory
    samples: dict[str, list[float]] = {
        "first start": [],
        "start": [],
        "stop": [],
        "cell": [],
        "sub-call cell": [],
    }
    with prepared(variant) as settings:

        def start() -> tuple[Environment, float]:
            began = time.perf_counter()
            env = factory(**settings)
            env.start(Session(subcalls=InstantSubcalls()))
            return env, time.perf_counter() - began

        def stop(env: Environment) -> float:
            began = time.perf_counter()
            env.close()
            return time.perf_counter() - began

        env, took = start()
        samples["first start"].append(took)
        stop(env)
        for _ in range(starts):
            env, took = start()
            samples["start"].append(took)
            samples["stop"].append(stop(env))
        env, _ = start()
        try:
            for metric, code in (("cell", "x = x + 1"), ("sub-call cell", "_r = llm_query('q')")):
                env.execute("x = 0")
                for _ in range(CELLS):
                    began = time.perf_counter()
                    result = env.execute(code)
                    samples[metric].append(time.perf_counter() - began)
                    if result.error:
                        raise RuntimeError(f"cell {code!r} failed: {result.error}")
        finally:
            env.close()
    return samples


def fmt(seconds: float | None) -> str:
    """Milliseconds, or microseconds under one."""
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def render(records: list[dict[str, Any]]) -> str:
    """The table (markdown) from sample records (``emit``'s fields)."""
    by_kind: dict[str, dict[str, list[float]]] = {}
    missing: dict[str, str] = {}
    for record in records:
        if record["name"] == "env-unavailable":
            missing[record["variant"]] = record["reason"]
        elif record["name"] == "env":
            by_kind.setdefault(record["variant"], {})[record["metric"]] = record["values"]
    lines = [
        "| environment | isolates | first start | start | stop | cell `x = x + 1` "
        "| cell with one `llm_query` |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, kind in KINDS.items():
        label = f"`{kind.name}`" + (
            f" ({', '.join(f'{k}={v!r}' for k, v in kind.settings.items())})"
            if kind.settings
            else ""
        )
        if variant in missing:
            lines.append(f"| {label} | {kind.isolates} | not run here: {missing[variant]} |||||")
            continue
        found = by_kind.get(variant)
        if found is None:
            continue

        def med(metric: str, found: dict[str, list[float]] = found) -> float | None:
            values = found.get(metric)
            return statistics.median(values) if values else None

        cells = [fmt(med(m)) for m in ("first start", "start", "stop", "cell", "sub-call cell")]
        lines.append(f"| {label} | {kind.isolates} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(variant: str, starts: int, emit_samples: bool) -> list[dict[str, Any]]:
    """Measure one kind; its records (also printed as samples with ``emit_samples``)."""
    records: list[dict[str, Any]] = []
    try:
        samples = measure(variant, starts)
    except RuntimeError as exc:
        record = {"name": "env-unavailable", "unit": "", "values": []}
        record |= {"variant": variant, "reason": str(exc)}
        records.append(record)
    else:
        for metric, values in samples.items():
            record = {"name": "env", "unit": "s", "values": values}
            record |= {"variant": variant, "metric": metric}
            records.append(record)
    if emit_samples:
        for record in records:
            fields = {k: v for k, v in record.items() if k not in ("name", "unit", "values")}
            emit(record["name"], record["unit"], record["values"], **fields)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", nargs="?", default="envs", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=sorted(KINDS), action="append", default=[])
    parser.add_argument("--starts", type=int, default=10, help="starts per kind (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 starts per kind")
    parser.add_argument("--emit", action="store_true", help="print JSON samples for bench/run.py")
    args = parser.parse_args(argv)
    starts = 3 if args.quick else args.starts
    if args.emit:
        import rlm_core

        emit_info(python=sys.version.split()[0], library_version=rlm_core.__version__)
    records: list[dict[str, Any]] = []
    for variant in args.variant or list(KINDS):
        began = time.perf_counter()
        records += run(variant, starts, args.emit)
        print(f"[envs] {variant}: {time.perf_counter() - began:.1f}s", file=sys.stderr)
    if not args.emit:
        print(render(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
