"""Benchmark worker for rlm-core: runs one workload and prints JSON sample lines.

Started by ``bench/run.py`` with the project venv's interpreter::

    .venv/bin/python bench/workloads_ours.py subcall --variant local --reps 3000

The stand-in LM is rlm-core's ``scripted`` backend driven by :class:`_common.Script`; the
``batched`` workload sends sub-calls to the driver's local OpenAI-compatible server through
the ``openai`` backend instead, and ``fixed-openai`` uses that backend as the root LM.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc_floor
from _common import (
    CELL_ANSWER,
    ROOT_MARKER,
    Script,
    batched_workload,
    cell_sequential_calls,
    e2e_workload,
    emit,
    fanout_workload,
    fixed_openai_workload,
    instant_answer,
    measure_cell_overhead,
    measure_context_load,
    run_cell,
    timed,
    worker_main,
)

import rlm_core
from rlm_core.environments.base import Environment, Session
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.rlm import RLM
from rlm_core.types import RLMChatCompletion, UsageSummary

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SPARE_PAUSE = 0.4
"""Seconds between completions in the spare-agent fixed-cost run (an agent starts in ~0.1 s)."""


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("local", {}),
    "subprocess": ("subprocess", {}),
    "subprocess-tls": ("subprocess", {"tls": True}),
    # The agent on loopback TCP, dialled as a cloud sandbox would be (the built-in stand-in).
    "tcp-tls": ("loopback", {"carrier": "dial", "tls": True}),
    "grpc-floor": ("", {}),  # no environment: bench/grpc_floor.py's bare echo
}
"""Worker variant name -> (environment name, environment_kwargs)."""


# -- helpers -------------------------------------------------------------------------------


class InstantSubcalls:
    """Host side of sub-calls for environments driven directly (answers at once)."""

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return RLMChatCompletion("standin", prompt, "ok", UsageSummary(), 0.0)

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return [self.llm_query(p) for p in prompts]

    rlm_query = llm_query
    rlm_query_batched = llm_query_batched


def new_env(variant: str) -> Environment:
    """A started environment for direct (non-RLM) workloads."""
    env: Environment
    if variant == "local":
        env = LocalEnvironment()
    elif variant == "subprocess":
        env = SubprocessEnvironment(prewarm=False)  # no spare agent starting mid-measurement
    else:
        raise SystemExit(f"no direct environment for variant {variant!r}")
    env.start(Session(subcalls=InstantSubcalls()))
    return env


def make_rlm(
    cells: list[str],
    variant: str,
    child_latency: float = 0.0,
    prewarm: bool = True,
    **kwargs: Any,
) -> RLM:
    """An RLM on the scripted stand-in LM playing ``cells`` in ``variant``'s environment.

    ``prewarm=False`` turns off the ``subprocess`` environment's spare agent, so no agent
    starts in the background while per-call latencies are measured.
    """
    environment, env_kwargs = VARIANTS[variant]
    env_kwargs = dict(env_kwargs)
    if environment == "subprocess" and not prewarm:
        env_kwargs["prewarm"] = False
    kwargs.setdefault("max_iterations", len(cells) + 2)
    return RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(cells, child_latency), "model_name": "standin"},
        environment=environment,
        environment_kwargs=env_kwargs,
        **kwargs,
    )


def run_cell_answer(rlm: RLM, name: str, context: Any = "hello") -> Any:
    """Run a completion whose cell answers JSON timings; return the decoded answer."""
    try:
        return run_cell(rlm, name, context)
    finally:
        rlm.close()


# -- workloads -----------------------------------------------------------------------------


def w_subcall(args: argparse.Namespace) -> None:
    """Per-call time of sequential ``llm_query`` calls in one cell."""
    cell = cell_sequential_calls(args.reps, warmup=max(20, args.reps // 20))
    times = run_cell_answer(make_rlm([cell], args.variant, prewarm=False), "subcall")
    emit("subcall", "s", times, variant=args.variant)


def w_context(args: argparse.Namespace) -> None:
    """Context load time and memory for one size, in a fresh process (peak RSS is per process)."""
    env = new_env(args.variant)
    try:
        measure_context_load(args, env.add_context, env.execute, getattr(env, "agent_pid", None))
    finally:
        env.close()


def w_cell(args: argparse.Namespace) -> None:
    """Trivial-cell time with an empty context and with a 10 MiB one, alternating rounds."""
    env = new_env(args.variant)
    try:
        measure_cell_overhead(args, env.add_context, env.execute)
    finally:
        env.close()


def w_bridge(args: argparse.Namespace) -> None:
    """Sequential ``llm_query`` round trips through the bridge (same cell as ``subcall``)."""
    warmup = max(20, args.reps // 20)
    cell = cell_sequential_calls(args.reps, warmup=warmup)
    if args.variant == "grpc-floor":
        times = grpc_floor.measure(args.reps, warmup)
    else:
        times = run_cell_answer(make_rlm([cell], args.variant, prewarm=False), "bridge")
    emit("bridge", "s", times, variant=args.variant)


def w_fixed(args: argparse.Namespace) -> None:
    """Cost of a one-turn completion: new RLM each time, reused RLM, reused persistent RLM."""

    def one(rlm: RLM) -> None:
        result = rlm.completion("hello", root_prompt=ROOT_MARKER + "fixed")
        if result.response != "done":
            raise RuntimeError(f"unexpected answer {result.response[:500]!r}")

    def new_each(prewarm: bool = True) -> None:
        rlm = make_rlm([CELL_ANSWER], args.variant, prewarm=prewarm)
        one(rlm)
        rlm.close()

    if args.variant == "subprocess":
        # Every agent started on demand, none ahead of need.
        new_each(prewarm=False)
        values = [timed(functools.partial(new_each, False)) for _ in range(args.reps)]
        emit("fixed", "s", values, variant=args.variant, mode="new-cold")
        # A pause (as a real model's latency would give) lets the spare agent finish starting.
        new_each()
        values = []
        for _ in range(args.reps):
            time.sleep(SPARE_PAUSE)
            values.append(timed(new_each))
        emit("fixed", "s", values, variant=args.variant, mode="new-spare-ready")
    new_each()  # warm-up (imports, first agent start)
    emit(
        "fixed",
        "s",
        [timed(new_each) for _ in range(args.reps)],
        variant=args.variant,
        mode="new",
    )
    for mode, persistent in (("reused", False), ("persistent", True)):
        rlm = make_rlm([CELL_ANSWER], args.variant, persistent=persistent)
        try:
            one(rlm)
            values = [timed(functools.partial(one, rlm)) for _ in range(args.reps)]
        finally:
            rlm.close()
        emit("fixed", "s", values, variant=args.variant, mode=mode)


EVAL_CONFIG: dict[str, Any] = {
    "name": "instant",
    "backend": "scripted",
    "backend_kwargs": {"responses": "_common:instant_answer", "model_name": "standin"},
}
"""Workload 8's configuration: the instant LM, which answers every task in one turn."""


def eval_tasks(count: int) -> list[dict[str, Any]]:
    """``count`` one-turn tasks for workload 8."""
    question = ROOT_MARKER + "eval"
    return [
        {"id": f"t{i:05d}", "context": "hello", "question": question, "answer": "done"}
        for i in range(count)
    ]


def timed_eval(tasks: list[dict[str, Any]], engine: str, concurrency: int) -> float:
    """Seconds of one ``rlm_core.eval.run`` over ``tasks`` into a fresh output directory
    (results fsync'd per task, a trajectory log per task, no plot)."""
    from rlm_core.eval import run as eval_run

    out = tempfile.mkdtemp(prefix="rlm-bench-eval-")
    try:
        start = time.perf_counter()
        done = eval_run(
            tasks, EVAL_CONFIG, engine, out_dir=out, concurrency=concurrency, plot=False
        )
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if done.scores() != {"instant": 1.0} or done.ran != len(tasks):
        raise RuntimeError(f"unexpected eval run: {done.to_markdown()}")
    return elapsed


def start_local_ray(temp: str) -> Any:
    """A local Ray instance on 127.0.0.1 with 2 CPUs whose workers can import ``_common``."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # bind the node to loopback
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # no token file in ~/.ray
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (BENCH_DIR, os.environ.get("PYTHONPATH")) if p
    )
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    return ray


def w_eval(args: argparse.Namespace) -> None:
    """``rlm eval`` of ``--width`` one-turn tasks with an instant LM, ``--reps`` times per
    engine: throughput on local threads (1 and 4) and on a local 2-CPU Ray cluster (2 tasks
    per node), and the overhead per task over a bare new-``RLM`` completion."""
    count = args.width
    tasks = eval_tasks(count)
    bare: list[float] = []
    for _ in range(args.reps):
        for _ in range(count):
            start = time.perf_counter()
            rlm = RLM(
                backend="scripted",
                backend_kwargs=dict(EVAL_CONFIG["backend_kwargs"], responses=instant_answer),
            )
            rlm.completion("hello", root_prompt=ROOT_MARKER + "eval")
            rlm.close()
            bare.append(time.perf_counter() - start)
    emit("eval", "s", bare, variant=args.variant, mode="bare", tasks=count)
    bare_mean = sum(bare) / len(bare)
    walls = {1: [], 4: []}
    for concurrency, values in walls.items():
        timed_eval(tasks[:50], "local", concurrency)  # warm-up (imports, first files)
        values.extend(timed_eval(tasks, "local", concurrency) for _ in range(args.reps))
        emit(
            "eval",
            "tasks/s",
            [count / v for v in values],
            variant=args.variant,
            engine="local",
            concurrency=concurrency,
            tasks=count,
        )
    emit(
        "eval",
        "s",
        [v / count - bare_mean for v in walls[1]],
        variant=args.variant,
        mode="overhead",
        tasks=count,
    )
    temp = tempfile.mkdtemp(prefix="rlm-bench-ray-")
    ray = start_local_ray(temp)
    try:
        timed_eval(tasks[:50], "ray", 2)  # warm-up (Ray starts its workers)
        values = [timed_eval(tasks, "ray", 2) for _ in range(args.reps)]
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    emit(
        "eval",
        "tasks/s",
        [count / v for v in values],
        variant=args.variant,
        engine="ray",
        concurrency=2,
        tasks=count,
    )


w_e2e = e2e_workload(make_rlm, RLM.close)
w_batched = batched_workload(make_rlm, run_cell, RLM.close)
w_fanout = fanout_workload(make_rlm, run_cell_answer)
w_fixed_openai = fixed_openai_workload(RLM, RLM.close)


RUNNERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "subcall": w_subcall,
    "batched": w_batched,
    "context": w_context,
    "cell": w_cell,
    "e2e": w_e2e,
    "bridge": w_bridge,
    "fixed": w_fixed,
    "fixed-openai": w_fixed_openai,
    "fanout": w_fanout,
    "eval": w_eval,
}


def main(argv: list[str] | None = None) -> int:
    """Run one workload (see ``_common.worker_main``)."""
    return worker_main(
        RUNNERS, VARIANTS, argv, system="rlm-core", library_version=rlm_core.__version__
    )


if __name__ == "__main__":
    sys.exit(main())
