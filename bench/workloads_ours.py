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
import re
import subprocess
import sys
import threading
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
    measure_cell_overhead,
    measure_context_load,
    run_cell,
    timed,
    worker_main,
)

import rlm_core
from rlm_core.bridge.client import Endpoint
from rlm_core.environments.agent import AgentEnvironment, AgentSecrets, Launcher
from rlm_core.environments.base import Environment, Session
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.hookspecs import hookimpl
from rlm_core.plugins import get_registry
from rlm_core.rlm import RLM
from rlm_core.types import RLMChatCompletion, UsageSummary

SPARE_PAUSE = 0.4
"""Seconds between completions in the spare-agent fixed-cost run (an agent starts in ~0.1 s)."""


# -- a loopback TCP launcher (the bridge as a remote sandbox would use it) ------------------


class TCPLauncher(Launcher):
    """Starts ``python -m rlm_core.agent --listen 127.0.0.1:0`` and dials it over TCP."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def launch(self, secrets: AgentSecrets, heartbeat_timeout: float) -> Endpoint:
        """Start the agent, hand it the secrets (token, TLS material) on stdin, read its port."""
        command = [
            sys.executable,
            "-m",
            "rlm_core.agent",
            "--listen",
            "127.0.0.1:0",
            "--secrets-stdin",
            "--heartbeat-timeout",
            str(heartbeat_timeout),
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(secrets.to_json() + "\n")
        process.stdin.close()
        ready = process.stdout.readline()
        match = re.search(r"port=(\d+)", ready)
        if match is None:
            raise RuntimeError(f"the agent did not start: {ready!r}")
        stdout = process.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
        return Endpoint(target=f"127.0.0.1:{match.group(1)}", token=secrets.token)

    def terminate(self) -> None:
        """Stop the agent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class TCPEnvironment(AgentEnvironment):
    """The agent environment reached over loopback TCP (as a cloud sandbox would be)."""

    name = "bench-tcp"

    def make_launcher(self) -> Launcher:
        """A fresh :class:`TCPLauncher`."""
        return TCPLauncher()


class _TCPPlugin:
    """Registers ``bench-tcp`` through the ordinary plugin hook."""

    @hookimpl
    def rlm_register_environments(self, register: Callable[..., None]) -> None:
        register("bench-tcp", TCPEnvironment)


get_registry().register(_TCPPlugin(), name="bench-tcp-plugin")

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("local", {}),
    "subprocess": ("subprocess", {}),
    "subprocess-tls": ("subprocess", {"tls": True}),
    "tcp-tls": ("bench-tcp", {"tls": True}),
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
}


def main(argv: list[str] | None = None) -> int:
    """Run one workload (see ``_common.worker_main``)."""
    return worker_main(
        RUNNERS, VARIANTS, argv, system="rlm-core", library_version=rlm_core.__version__
    )


if __name__ == "__main__":
    sys.exit(main())
