"""``make bench``: rlm-core and the reference ``rlms`` 0.1.3, side by side, in one run.

The driver starts one worker process per measurement, with each system's own interpreter
(``.venv`` for rlm-core, ``bench/.venv-rlms`` for ``rlms``), collects the JSON samples the
workers print, and writes a markdown table (median, p95, p99, the ratio rlm-core/rlms and
the performance targets) to stdout and to ``bench/results/latest.md``.

    .venv/bin/python bench/run.py                  # everything (~5 minutes on 2 cores)
    .venv/bin/python bench/run.py --only 2         # one workload, by number ...
    .venv/bin/python bench/run.py --only fanout --quick   # ... or by name, fewer repetitions
    .venv/bin/python bench/run.py --only wan --out bench/results/partial.md   # the WAN section

Workload 9 (``wan``, rlm-core only) is :mod:`wan`: the bridge over every carrier through a
link that delays each byte 25 ms each way; it has its own section and table. Workload 10
(``envs``, rlm-core only) is :mod:`environments`: start, stop and per-cell cost of each
local environment (``local``, ``subprocess``, ``bwrap``, ``docker``, ``ipython``).

Nothing here talks to anything but 127.0.0.1: the stand-in LMs run in the worker
processes, and the one HTTP model (for latency) is :mod:`lm_server`, started by this driver.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import environments
import wan
from _common import FIXED_BACKENDS, SAMPLE_PREFIX
from lm_server import LMServer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_OURS_PYTHON = ROOT / ".venv" / "bin" / "python"
DEFAULT_RLMS_PYTHON = BENCH / ".venv-rlms" / "bin" / "python"
RESULTS = BENCH / "results" / "latest.md"
WORKER_TIMEOUT = 240.0

NUMBERS: dict[str, str] = {
    "subcall": "1",
    "batched": "2",
    "context": "3",
    "cell": "4",
    "e2e": "5",
    "bridge": "6",
    "fixed": "7",
    "fixed-openai": "7",
    "fanout": "7",
    "eval": "8",
    "wan": "9",
    "envs": "10",
}
"""Worker workload name -> workload number of the table (9: its own section)."""

LABELS: dict[tuple[str, str], str] = {
    ("ours", "local"): "rlm-core local",
    ("ours", "subprocess"): "rlm-core subprocess",
    ("ours", "subprocess-tls"): "rlm-core subprocess, TLS (unix socket)",
    ("ours", "tcp-tls"): "rlm-core agent over TCP, TLS (loopback)",
    ("ours", "grpc-floor"): "floor: bare gRPC echo, same thread hand-offs, no rlm-core",
    ("rlms", "local"): "rlms local",
    ("rlms", "ipython-subprocess"): "rlms ipython, subprocess kernel",
}

PAIRS: dict[str, str] = {"local": "local", "subprocess": "ipython-subprocess"}
"""rlm-core variant -> the rlms variant it is compared with."""

CONTEXT_SIZES = (1, 10, 50)
LATENCY_MS = 50
BATCH_WIDTH = 64
FANOUT_WIDTH = 16
EVAL_TASKS = 1000


# -- plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One worker run."""

    system: str  # "ours" or "rlms"
    workload: str
    variant: str
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        """A short label for progress lines."""
        return " ".join([self.system, self.workload, self.variant, *self.args])


def plan(quick: bool, lm_url: str, answer_url: str) -> list[Job]:
    """Every worker run of a full (or ``quick``) benchmark, in execution order.

    ``lm_url`` is the HTTP model of workload 2, ``answer_url`` the one of workload 7's
    ``openai`` / ``gemini`` / ``portkey`` rows (its replies are a cell that answers at once).
    """

    def n(full: int, fast: int) -> str:
        return str(fast if quick else full)

    jobs: list[Job] = []
    args: tuple[str, ...]
    # 1. sub-call overhead
    for system, variant, full, fast in (
        ("ours", "local", 5000, 500),
        ("rlms", "local", 2000, 300),
        ("ours", "subprocess", 3000, 300),
        ("rlms", "ipython-subprocess", 2000, 300),
    ):
        jobs.append(Job(system, "subcall", variant, ("--reps", n(full, fast))))
    # 2. 64 concurrent sub-calls against a 50 ms model
    for system in ("ours", "rlms"):
        args = ("--reps", n(12, 3), "--warm", n(5, 2), "--width", str(BATCH_WIDTH))
        jobs.append(Job(system, "batched", "local", (*args, "--lm-url", lm_url)))
    # 3. context load, one process per size (peak memory is per process)
    reps = {1: (40, 5), 10: (15, 3), 50: (8, 2)}
    for size in CONTEXT_SIZES:
        for system, variant in (
            ("ours", "local"),
            ("rlms", "local"),
            ("ours", "subprocess"),
            ("rlms", "ipython-subprocess"),
        ):
            args = ("--size-mib", str(size), "--reps", n(*reps[size]))
            jobs.append(Job(system, "context", variant, args))
    # 4. per-cell overhead, empty vs 10 MiB context
    for system, variant, full, fast in (
        ("ours", "local", 4000, 400),
        ("rlms", "local", 4000, 400),
        ("ours", "subprocess", 800, 100),
        ("rlms", "ipython-subprocess", 200, 40),
    ):
        jobs.append(Job(system, "cell", variant, ("--reps", n(full, fast), "--size-mib", "10")))
    # 5. end to end
    jobs.append(Job("ours", "e2e", "local", ("--reps", n(30, 5))))
    jobs.append(Job("rlms", "e2e", "local", ("--reps", n(8, 2))))
    # 6. the bridge (rlm-core only)
    for variant in ("subprocess", "subprocess-tls", "tcp-tls", "grpc-floor"):
        jobs.append(Job("ours", "bridge", variant, ("--reps", n(3000, 300))))
    # 7. fixed cost of a completion, and fan-out
    for system, variant, full, fast in (
        ("ours", "local", 100, 10),
        ("rlms", "local", 5, 2),
        ("ours", "subprocess", 20, 3),
        ("rlms", "ipython-subprocess", 3, 1),
    ):
        jobs.append(Job(system, "fixed", variant, ("--reps", n(full, fast))))
    for backend in FIXED_BACKENDS:
        for system, full, fast in (("ours", 100, 10), ("rlms", 5, 2)):
            args = ("--reps", n(full, fast), "--lm-url", answer_url, "--backend", backend)
            jobs.append(Job(system, "fixed-openai", "local", args))
    for latency in (0, LATENCY_MS):
        for system, full, fast in (("ours", 30, 5), ("rlms", 5, 2)):
            args = ("--reps", n(full, fast), "--width", str(FANOUT_WIDTH))
            args += ("--child-latency-ms", str(latency))
            jobs.append(Job(system, "fanout", "local", args))
    # 8. `rlm eval` throughput (rlm-core only)
    jobs.append(Job("ours", "eval", "local", ("--reps", n(3, 1), "--width", str(EVAL_TASKS))))
    # 9. the bridge over a 50 ms RTT link, every carrier (rlm-core only; bench/wan.py)
    for variant in wan.VARIANTS:
        jobs.append(Job("ours", "wan", variant, ("--emit", "--trace", *(("--quick",) * quick))))
    # 10. start and per-cell cost of each local environment (rlm-core only)
    for variant in environments.KINDS:
        jobs.append(Job("ours", "envs", variant, ("--emit", *(("--quick",) * quick))))
    return jobs


def select(jobs: list[Job], only: list[str]) -> list[Job]:
    """Jobs of the workloads named (by number ``"3"`` or worker name ``"context"``)."""
    if not only:
        return jobs
    wanted = {w.strip() for item in only for w in item.split(",") if w.strip()}
    unknown = wanted - set(NUMBERS) - set(NUMBERS.values())
    if unknown:
        raise SystemExit(f"unknown workload(s) {sorted(unknown)}: use 1-10 or {sorted(NUMBERS)}")
    return [j for j in jobs if j.workload in wanted or NUMBERS[j.workload] in wanted]


# -- running workers -------------------------------------------------------------------------


@dataclass
class Record:
    """One sample record a worker printed."""

    system: str
    name: str
    unit: str
    values: list[float]
    meta: dict[str, Any]


@dataclass
class Outcome:
    """Everything the workers reported."""

    records: list[Record] = field(default_factory=list)
    failures: list[tuple[Job, str]] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def samples(self, *names: str) -> list[dict[str, Any]]:
        """The records of these names as the workers printed them (``emit``'s fields)."""
        return [
            {"name": r.name, "unit": r.unit, "values": r.values, **r.meta}
            for r in self.records
            if r.name in names
        ]

    def find(self, system: str, name: str, **meta: Any) -> Record | None:
        """The record of ``system``'s metric ``name`` whose metadata matches ``meta``."""
        for record in self.records:
            if record.system != system or record.name != name:
                continue
            if all(record.meta.get(k) == v for k, v in meta.items()):
                return record
        return None


def worker_env() -> dict[str, str]:
    """The workers' environment: no stray import paths or model settings; a dummy key.

    Bytecode caching is on (in ``bench/.pycache``, not the source tree) even where the shell
    turns it off, so agent and kernel start-ups cost what they cost in a normal install.
    """
    dropped = ("PYTHONPATH", "OPENAI_BASE_URL", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["OPENAI_API_KEY"] = "dummy"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPYCACHEPREFIX"] = str(BENCH / ".pycache")
    return env


def profiler_prefix(job: Job, profile_dir: Path | None) -> list[str]:
    """``py-spy record ... --`` for rlm-core workers when profiling (GIL-holding samples,
    agent subprocesses included, collapsed stacks in ``profile_dir``), else nothing."""
    if profile_dir is None or job.system != "ours":
        return []
    py_spy = shutil.which("py-spy") or str(DEFAULT_OURS_PYTHON.parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    words = [job.workload, job.variant]
    words += [a.lstrip("-") for a in job.args if "://" not in a and a != "--lm-url"]
    output = profile_dir / ("-".join(words) + ".txt")
    record = ["record", "--gil", "--subprocesses", "--rate", "250", "--format", "raw"]
    return [py_spy, *record, "--output", str(output), "--"]


def run_job(
    job: Job, pythons: dict[str, Path], workdir: str, profile_dir: Path | None = None
) -> tuple[list[Record], str | None]:
    """Run one worker (its own process group, killed on timeout); parse its samples."""
    script = BENCH / ("workloads_ours.py" if job.system == "ours" else "workloads_rlms.py")
    if job.workload == "wan":
        script = BENCH / "wan.py"
    elif job.workload == "envs":
        script = BENCH / "environments.py"
    command = [str(pythons[job.system]), str(script), job.workload, "--variant", job.variant]
    process = subprocess.Popen(
        [*profiler_prefix(job, profile_dir), *command, *job.args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
        env=worker_env(),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return [], f"timed out after {WORKER_TIMEOUT:g}s; stderr tail: {stderr[-800:]}"
    records = []
    for line in stdout.splitlines():
        if line.startswith(SAMPLE_PREFIX):
            data = json.loads(line[len(SAMPLE_PREFIX) :])
            name, unit, values = data.pop("name"), data.pop("unit"), data.pop("values")
            records.append(Record(job.system, name, unit, values, data))
    if process.returncode != 0:
        tail = [x for x in stderr.strip().splitlines() if "IPKernelApp" not in x][-6:]
        return records, f"exit status {process.returncode}: " + " / ".join(tail)
    return records, None


def run_all(jobs: list[Job], pythons: dict[str, Path], profile_dir: Path | None = None) -> Outcome:
    """Run the jobs one after the other (never two at once: they would compete for cores)."""
    outcome = Outcome()
    outcome.load_before = os.getloadavg()
    workdir = tempfile.mkdtemp(prefix="rlm-bench-")
    try:
        for i, job in enumerate(jobs, 1):
            start = time.perf_counter()
            records, error = run_job(job, pythons, workdir, profile_dir)
            elapsed = time.perf_counter() - start
            status = "ok" if error is None else "FAILED"
            print(f"[{i}/{len(jobs)}] {job.describe()}: {status} ({elapsed:.1f}s)", file=sys.stderr)
            for record in records:
                if record.name == "info":
                    outcome.info[job.system] = record.meta
                else:
                    outcome.records.append(record)
            if error is not None:
                print(f"    {error}", file=sys.stderr)
                outcome.failures.append((job, error))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outcome.load_after = os.getloadavg()
    return outcome


# -- statistics and rows ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


SCALE = {"us": 1e6, "ms": 1e3, "s": 1.0}


@dataclass
class Row:
    """One line of the results table (values already in ``unit``)."""

    number: str
    workload: str
    system: str
    median: float | None
    p95: float | None
    p99: float | None
    unit: str
    n: int = 0
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def time_row(number: str, workload: str, record: Record | None, label: str, unit: str) -> Row:
    """A row of a timing metric (seconds in the record) shown in ``unit``."""
    if record is None:
        return Row(number, workload, label, None, None, None, unit)
    scale = SCALE[unit]
    values = record.values
    return Row(
        number,
        workload,
        label,
        percentile(values, 50) * scale,
        percentile(values, 95) * scale,
        percentile(values, 99) * scale,
        unit,
        n=len(values),
    )


def throughput_row(number: str, workload: str, record: Record | None, label: str) -> Row:
    """MB/s (10^6 bytes per second) at the median, p95 and p99 load *times*."""
    if record is None:
        return Row(number, workload, label, None, None, None, "MB/s")
    size = record.meta["bytes"] / 1e6
    values = record.values
    return Row(
        number,
        workload,
        label,
        size / percentile(values, 50),
        size / percentile(values, 95),
        size / percentile(values, 99),
        "MB/s",
        n=len(values),
    )


def with_ratio(ours: Row, theirs: Row) -> None:
    """Set ``ours.ratio`` to ours/theirs of the medians when both exist."""
    if ours.median is not None and theirs.median:
        ours.ratio = ours.median / theirs.median


def judge(row: Row, target: str, ok: bool | None) -> Row:
    """Attach a target and whether it is met (``None``: could not be measured)."""
    row.target = target
    row.met = ok if row.median is not None else None
    return row


def within(row: Row, base: Row, factor: float) -> bool:
    """Whether ``row``'s median is at most ``factor`` times ``base``'s (both measured)."""
    return row.median is not None and base.median is not None and row.median <= factor * base.median


def build_rows(out: Outcome) -> list[Row]:
    """The results table, workload by workload."""
    rows: list[Row] = []

    def pair_rows(
        number: str,
        workload: str,
        name: str,
        unit: str,
        variants: Iterable[str],
        target: Callable[[str, Row], tuple[str, bool | None] | None] | None = None,
        **meta: Any,
    ) -> None:
        for variant in variants:
            theirs_variant = PAIRS[variant]
            ours_record = out.find("ours", name, variant=variant, **meta)
            theirs_record = out.find("rlms", name, variant=theirs_variant, **meta)
            ours = time_row(number, workload, ours_record, LABELS["ours", variant], unit)
            theirs = time_row(number, workload, theirs_record, LABELS["rlms", theirs_variant], unit)
            with_ratio(ours, theirs)
            goal = target(variant, ours) if target else None
            if goal is not None:
                judge(ours, *goal)
            rows.extend([ours, theirs])

    # 1.
    def subcall_target(variant: str, row: Row) -> tuple[str, bool | None]:
        limit = 20 if variant == "local" else 300
        label = "<= 20 us" if variant == "local" else "p50 <= 300 us (bridge)"
        return label, row.median is not None and row.median <= limit

    pair_rows(
        "1",
        "sub-call overhead: one `llm_query` in a cell, instant LM",
        "subcall",
        "us",
        ("local", "subprocess"),
        subcall_target,
    )
    # 2.
    for phase, when in (
        ("cold", "first batch of a completion"),
        ("warm", "later batches"),
        ("reused", "first batch of a completion, `RLM` reused"),
    ):
        pair_rows(
            "2",
            f"{BATCH_WIDTH} concurrent sub-calls (`llm_query_batched`), {LATENCY_MS} ms LM, "
            + when,
            "batched",
            "ms",
            ("local",),
            lambda v, r: ("<= 65 ms (ideal 50)", r.median is not None and r.median <= 65),
            phase=phase,
        )
        for row in rows[-2:]:
            system = "ours" if row.system.startswith("rlm-core") else "rlms"
            record = out.find(system, "batched", variant="local", phase=phase)
            if record is not None and record.meta.get("failed_calls"):
                row.system += (
                    f" ({record.meta['failed_calls']}/{record.meta['total_calls']} calls failed)"
                )
    # 3.
    for size in CONTEXT_SIZES:
        for variant in ("local", "subprocess"):
            theirs_variant = PAIRS[variant]
            label = f"context load, {size} MiB str"
            ours = throughput_row(
                "3",
                label,
                out.find("ours", "context", variant=variant, size_mib=float(size)),
                LABELS["ours", variant],
            )
            theirs = throughput_row(
                "3",
                label,
                out.find("rlms", "context", variant=theirs_variant, size_mib=float(size)),
                LABELS["rlms", theirs_variant],
            )
            with_ratio(ours, theirs)
            if size == 50:
                ok = (
                    ours.median is not None
                    and ours.median >= 500
                    and ours.ratio is not None
                    and ours.ratio >= 3
                )
                judge(ours, ">= 500 MB/s and >= 3x rlms", ok)
            rows.extend([ours, theirs])
    # 4.
    for variant in ("local", "subprocess"):
        theirs_variant = PAIRS[variant]
        for system, v in (("ours", variant), ("rlms", theirs_variant)):
            empty = time_row(
                "4",
                "trivial cell `x = 1`, empty context",
                out.find(system, "cell", variant=v, context="empty"),
                LABELS[system, v],
                "us",
            )
            loaded = time_row(
                "4",
                "trivial cell `x = 1`, 10 MiB context",
                out.find(system, "cell", variant=v, context="loaded"),
                LABELS[system, v],
                "us",
            )
            if system == "ours":
                judge(loaded, "<= 1.10 x empty context", within(loaded, empty, 1.10))
                ours_rows = (empty, loaded)
            else:
                with_ratio(ours_rows[0], empty)
                with_ratio(ours_rows[1], loaded)
            rows.extend([empty, loaded])
    # 5.
    pair_rows(
        "5",
        "end to end: 20 turns, 100 sub-calls, instant LM",
        "e2e",
        "ms",
        ("local",),
    )
    # 6.
    for variant in ("subprocess", "subprocess-tls", "tcp-tls"):
        row = time_row(
            "6",
            "bridge sub-call round trip (sequential `llm_query`)",
            out.find("ours", "bridge", variant=variant),
            LABELS["ours", variant],
            "us",
        )
        rows.append(judge(row, "p50 <= 300 us", row.median is not None and row.median <= 300))
    rows.append(
        time_row(
            "6",
            "bridge sub-call round trip",
            out.find("ours", "bridge", variant="grpc-floor"),
            LABELS["ours", "grpc-floor"],
            "us",
        )
    )
    rows.append(
        Row("6", "bridge sub-call round trip", "rlms: no equivalent", None, None, None, "us")
    )
    # 7.
    for mode, what in (
        ("new-cold", "one-turn completion, new `RLM` each call, no spare agent (`prewarm=False`)"),
        ("new-spare-ready", "one-turn completion, new `RLM` each call, 0.4 s apart (spare ready)"),
    ):
        row = time_row(
            "7",
            what,
            out.find("ours", "fixed", variant="subprocess", mode=mode),
            LABELS["ours", "subprocess"],
            "ms",
        )
        rows.append(judge(row, "<= 100 ms", row.median is not None and row.median <= 100))
    for mode, what in (
        ("new", "one-turn completion, new `RLM` each call, back to back"),
        ("reused", "one-turn completion, reused `RLM`, back to back"),
        ("persistent", "one-turn completion, reused `RLM(persistent=True)`"),
    ):

        def fixed_target(variant: str, row: Row) -> tuple[str, bool | None]:
            limit = 10 if variant == "local" else 100
            return f"<= {limit} ms", row.median is not None and row.median <= limit

        pair_rows("7", what, "fixed", "ms", ("local", "subprocess"), fixed_target, mode=mode)
    for backend in FIXED_BACKENDS:
        for mode, what in (("new", "new `RLM` each call"), ("reused", "reused `RLM`")):
            pair_rows(
                "7",
                f"one-turn completion, `{backend}` backend (local HTTP model, instant), {what}",
                "fixed-openai",
                "ms",
                ("local",),
                lambda v, r: ("<= 10 ms", r.median is not None and r.median <= 10),
                mode=mode,
                backend=backend,
            )
    for latency in (0, LATENCY_MS):
        lm = "instant LM" if latency == 0 else f"children's LM {latency} ms"
        for system in ("ours", "rlms"):
            one_record = out.find(
                system, "fanout", variant="local", children=1, child_latency_ms=latency
            )
            one = time_row(
                "7",
                f"`rlm_query_batched`, 1 child, {lm}",
                one_record,
                LABELS[system, "local"],
                "ms",
            )
            record = out.find(
                system, "fanout", variant="local", children=FANOUT_WIDTH, child_latency_ms=latency
            )
            many = time_row(
                "7",
                f"`rlm_query_batched`, {FANOUT_WIDTH} children, {lm}",
                record,
                LABELS[system, "local"],
                "ms",
            )
            for row, rec in ((one, one_record), (many, record)):
                if rec is not None and rec.meta.get("failed_children"):
                    row.system += (
                        f" ({rec.meta['failed_children']}/{rec.meta['total_children']} "
                        "children failed)"
                    )
            if system == "ours":
                judge(many, "<= 2x one child", within(many, one, 2.0))
                ours_pair = (one, many)
            else:
                with_ratio(ours_pair[0], one)
                with_ratio(ours_pair[1], many)
            rows.extend([one, many])
    rows.extend(eval_rows(out))
    return rows


def eval_rows(out: Outcome) -> list[Row]:
    """Workload 8: `rlm eval` throughput and its overhead per task (rlm-core only)."""
    what = f"`rlm eval`, {EVAL_TASKS:,} one-turn tasks, instant LM: throughput"
    rows = []
    for engine, concurrency, label in (
        ("local", 1, "rlm-core eval, local engine, 1 thread"),
        ("local", 4, "rlm-core eval, local engine, 4 threads"),
        ("ray", 2, "rlm-core eval, Ray engine, local 2-CPU cluster, 2 tasks per node"),
    ):
        record = out.find("ours", "eval", engine=engine, concurrency=concurrency)
        if record is None:
            rows.append(Row("8", what, label, None, None, None, "tasks/s"))
            continue
        values = record.values  # the slow tail of a rate is its low percentiles
        rows.append(
            Row(
                "8",
                what,
                label,
                percentile(values, 50),
                percentile(values, 5),
                percentile(values, 1),
                "tasks/s",
                n=len(values),
            )
        )
    rows.append(Row("8", what, "rlms: no equivalent (no batch runner)", None, None, None, ""))
    bare = out.find("ours", "eval", mode="bare")
    rows.append(
        time_row(
            "8",
            "bare `RLM(...)` + one-turn `completion()`, instant LM",
            bare,
            "rlm-core local",
            "ms",
        )
    )
    overhead = out.find("ours", "eval", mode="overhead")
    rows.append(
        time_row(
            "8",
            "`rlm eval` overhead per task over the bare completion (1 thread)",
            overhead,
            "rlm-core eval, local engine",
            "ms",
        )
    )
    return rows


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """A number with about three significant digits."""
    if value is None:
        return "—"
    if value >= 10000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_table(rows: list[Row]) -> str:
    """The main markdown table."""
    lines = [
        "| # | workload | system | median | p95 | p99 | unit | n | ours/theirs | target | met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r.ratio:.3g}" if r.ratio is not None else ""
        met = {True: "**met**", False: "**missed**", None: ""}[r.met]
        if r.target and r.met is None:
            met = "not measured"
        lines.append(
            f"| {r.number} | {r.workload} | {r.system} | {fmt(r.median)} | {fmt(r.p95)} | "
            f"{fmt(r.p99)} | {r.unit} | {r.n or ''} | {ratio} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def render_context_details(out: Outcome) -> str:
    """Load times and memory of workload 3."""
    lines = [
        "| size | system | median ms | p95 ms | MB/s (median) | host peak RSS added, MiB "
        "| sandbox peak RSS before → after first load, MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for size in CONTEXT_SIZES:
        for system, variant in (
            ("ours", "local"),
            ("rlms", "local"),
            ("ours", "subprocess"),
            ("rlms", "ipython-subprocess"),
        ):
            rec = out.find(system, "context", variant=variant, size_mib=float(size))
            if rec is None:
                continue
            median = percentile(rec.values, 50)
            before, peak = rec.meta.get("sandbox_before_mib"), rec.meta.get("sandbox_peak_mib")
            sandbox = f"{before:.0f} → {peak:.0f}" if before and peak else "—"
            lines.append(
                f"| {size} MiB | {LABELS[system, variant]} | {fmt(median * 1e3)} | "
                f"{fmt(percentile(rec.values, 95) * 1e3)} | {fmt(rec.meta['bytes'] / 1e6 / median)}"
                f" | {rec.meta['host_added_mib']:.1f} | {sandbox} |"
            )
    return "\n".join(lines)


NOTES = f"""\
* **Ratios** are rlm-core's median over rlms's median for the same workload: below 1 rlm-core
  takes less time; for MB/s, above 1 rlm-core is faster. p95/p99 of MB/s are the throughput
  at the p95/p99 load time (the slow tail).
* **LM used.** Workloads 1, 3-7: an in-process stand-in that answers at once — rlm-core's
  `scripted` backend, and for rlms a `BaseLM` subclass returned by a patched
  `rlm.clients.get_client`; both run the same script (`bench/_common.py`) and report
  pseudo-token usage. Workload 2: the root LM is that stand-in, the sub-calls go through each
  library's own `openai` backend (rlm-core's default direct transport; rlms's `openai` SDK
  client) to `bench/lm_server.py`, a threaded OpenAI-compatible HTTP server on 127.0.0.1
  that sleeps {LATENCY_MS} ms per request (`other_backends=["openai"]`). A new `RLM` per
  completion: its first batch opens the connections, later batches reuse them; the
  "reused" row is the first batch of completions of one `RLM` that has run before.
  Workload 7's "{LATENCY_MS} ms" fan-out rows: the stand-in sleeps {LATENCY_MS} ms before
  each child's reply. Workload 7's `openai` rows: the root LM is each library's own `openai`
  backend (default settings) pointed at the same server, which answers at once with the
  cell that ends the completion, so a new `RLM` also builds that backend.
* **Timing points.** Workloads 1, 2, 6 and the fan-out rows are timed inside the cell
  (`time.perf_counter` around each call), after warm-up calls; 3 and 4 around the
  environment call on the host; 5 and 7 around `RLM(...)` + `completion()` on the host.
* **rlms subprocess mode** is `environment="ipython"` with
  `environment_kwargs={{"kernel_mode": "subprocess"}}` (an ipykernel started through
  jupyter_client; `rlms[ipython]` extras). Its cells reach the LM handler over TCP, like
  rlms `local`.
* **Workload 6** has no rlms counterpart: rlms's remote environments (modal, e2b, daytona,
  prime, docker) need a cloud account or a Docker daemon. Its "floor" row
  (`bench/grpc_floor.py`) is a bare gRPC echo between two processes with the bridge's thread
  hand-offs and no rlm-core code: what gRPC itself costs on this machine.
* **`subprocess` agents** are forked from a fork server (the default, `prewarm=True`), except
  in the `prewarm=False` row, where every agent is a new interpreter.
* **rlms's ~0.5 s per completion** (workloads 5 and 7) is its `LMHandler.stop()`:
  `socketserver`'s `shutdown()` waits for `serve_forever`'s 0.5 s poll to notice.
* **rlms failures**, when listed below, are rlms's own: batched calls run each batch in a
  fresh `asyncio.run` loop with one shared `AsyncOpenAI` client whose pooled connections
  belong to an earlier, closed loop ("Event loop is closed"); concurrent child RLMs in
  `local` each `os.chdir` into their own temporary directory, which is process-wide, and a
  child that deletes its directory leaves the others (and every later child) without a
  working directory ("No such file or directory").
"""


def render(rows: list[Row], out: Outcome, *, quick: bool, elapsed: float, only: list[str]) -> str:
    """The whole results document."""
    ours, theirs = out.info.get("ours", {}), out.info.get("rlms", {})
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (fewer repetitions)" if quick else "full"
    if only:
        mode += f", only {', '.join(only)}"
    parts = [
        "# rlm-core vs rlms: benchmark results",
        "",
        f"Generated by `make bench` (`bench/run.py`) on {when}; {mode} run, "
        f"{elapsed:.0f} s in all.",
        "",
        f"* Machine: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}; load average "
        f"{out.load_before[0]:.2f} before the run, {out.load_after[0]:.2f} after (1 minute; "
        "anything above ~1 means other processes competed for the cores)",
        f"* rlm-core {ours.get('library_version', '?')} on Python {ours.get('python', '?')}; "
        f"rlms {theirs.get('library_version', '?')} on Python {theirs.get('python', '?')} "
        "(each in its own venv, one worker process per measurement)",
    ]
    if rows:
        parts += ["", render_table(rows)]
    if any(r.name == "context" for r in out.records):
        parts += ["", "## Context load details (workload 3)", "", render_context_details(out)]
    remarks: list[str] = []
    for r in out.records:
        if r.name == "fanout" and r.meta.get("failed_children"):
            remarks.append(
                f"* **{r.system} fan-out of {r.meta['children']}, "
                f"{r.meta['child_latency_ms']:g} ms children:** {r.meta['failed_children']} of "
                f"{r.meta['total_children']} child RLMs failed, e.g. "
                f"`{r.meta['first_failure']}`; the times include the failing children."
            )
        if r.name == "batched" and r.meta.get("failed_calls") and r.meta.get("phase") == "warm":
            remarks.append(
                f"* **{r.system} batched sub-calls:** {r.meta['failed_calls']} of "
                f"{r.meta['total_calls']} calls failed, e.g. `{r.meta['first_failure']}`; "
                "the times include the failing calls."
            )
    for job, error in out.failures:
        remarks.append(f"* **{job.describe()} failed:** {error}")
    if rows:
        parts += ["", "## Notes", "", NOTES.rstrip("\n"), *remarks]
    elif remarks:
        parts += ["", "## Failures", "", *remarks]
    wan_records = out.samples("wan", "wan-trace")
    if wan_records:
        parts += ["", "## WAN: the bridge over a 50 ms RTT link (workload 9)", ""]
        parts.append(wan.render(wan_records, fold=True))
    env_records = out.samples("env", "env-unavailable")
    if env_records:
        parts += ["", "## Local environments: start and per-cell cost (workload 10)", ""]
        parts += [environments.METHOD, "", environments.render(env_records)]
    return "\n".join(parts).rstrip() + "\n"


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and write it to ``bench/results/latest.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this workload: 1-10 or subcall, batched, context, cell, e2e, bridge, "
        "fixed, fixed-openai, fanout, eval, wan, envs (repeatable, or comma-separated)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run rlm-core workers under `py-spy record --gil --subprocesses` and write "
        "collapsed stacks to DIR (needs py-spy in .venv; timings are then perturbed)",
    )
    parser.add_argument("--ours-python", type=Path, default=DEFAULT_OURS_PYTHON)
    parser.add_argument("--rlms-python", type=Path, default=DEFAULT_RLMS_PYTHON)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where to write the markdown (default {RESULTS.relative_to(ROOT)} for a full "
        "run; a --only or --quick run writes only where --out says, e.g. "
        "bench/results/partial.md, which git ignores)",
    )
    args = parser.parse_args(argv)
    pythons = {"ours": args.ours_python, "rlms": args.rlms_python}
    for system, python in pythons.items():
        if not python.exists():
            raise SystemExit(f"{python} is missing (the {system} venv): run `make bench`")

    server = LMServer()
    server.start()
    start = time.perf_counter()
    try:
        urls = (server.base_url(LATENCY_MS), server.base_url(answer=True))
        jobs = select(plan(args.quick, *urls), args.only)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        outcome = run_all(jobs, pythons, args.profile)
    finally:
        server.stop()
    rows = build_rows(outcome)
    if args.only:
        numbers = {NUMBERS[j.workload] for j in jobs}
        rows = [
            r
            for r in rows
            if r.number in numbers and (r.median is not None or "no equivalent" in r.system)
        ]
    report = render(
        rows,
        outcome,
        quick=args.quick,
        elapsed=time.perf_counter() - start,
        only=args.only,
    )
    print(report)
    out = args.out if args.out is not None else (None if args.only or args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")
        print(f"written to {out}", file=sys.stderr)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
