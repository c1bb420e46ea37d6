"""Benchmark worker for the reference ``rlms`` 0.1.3: runs one workload, prints JSON samples.

Started by ``bench/run.py`` with ``bench/.venv-rlms``'s interpreter::

    bench/.venv-rlms/bin/python bench/workloads_rlms.py subcall --variant local --reps 3000

The stand-in LM is :class:`StandInLM`, a ``BaseLM`` subclass that answers from the same
:class:`_common.Script` as rlm-core's scripted backend; ``rlm.clients.get_client`` is
patched to return it for ``backend="standin"``. The ``batched`` workload sends sub-calls to
the driver's local OpenAI-compatible server through ``rlms``'s own ``openai`` client, and
``fixed-openai`` uses that client as the root LM.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

import rlm.clients
import rlm.core.rlm
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
    usage_tokens,
    worker_main,
)
from rlm import RLM
from rlm.clients.base_lm import BaseLM
from rlm.core.types import ModelUsageSummary, UsageSummary

# -- the stand-in LM -----------------------------------------------------------------------


class StandInLM(BaseLM):
    """Answers from a :class:`Script` at once and reports pseudo-token usage."""

    def __init__(self, script: Callable[[list[dict[str, Any]]], str], **kwargs: Any) -> None:
        super().__init__(model_name=kwargs.pop("model_name", "standin"), **kwargs)
        self.script = script
        self._lock = threading.Lock()
        self.calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.last = ModelUsageSummary(0, 0, 0, None)

    def completion(self, prompt: Any, model: str | None = None) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        reply = self.script(messages)
        tokens_in, tokens_out = usage_tokens(messages, reply)
        with self._lock:
            self.calls += 1
            self.tokens_in += tokens_in
            self.tokens_out += tokens_out
            self.last = ModelUsageSummary(1, tokens_in, tokens_out, None)
        return reply

    async def acompletion(self, prompt: Any, model: str | None = None) -> str:
        return self.completion(prompt, model)

    def get_usage_summary(self) -> UsageSummary:
        with self._lock:
            summary = ModelUsageSummary(self.calls, self.tokens_in, self.tokens_out, None)
        return UsageSummary(model_usage_summaries={self.model_name: summary})

    def get_last_usage(self) -> ModelUsageSummary:
        return self.last


_original_get_client = rlm.clients.get_client


def _get_client(backend: str, backend_kwargs: dict[str, Any]) -> BaseLM:
    if backend == "standin":
        return StandInLM(**backend_kwargs)
    return _original_get_client(backend, backend_kwargs)


rlm.clients.get_client = _get_client
rlm.core.rlm.get_client = _get_client

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("local", {}),
    "ipython-subprocess": ("ipython", {"kernel_mode": "subprocess"}),
}
"""Worker variant name -> (rlms environment name, environment_kwargs)."""


# -- helpers -------------------------------------------------------------------------------


def new_env(variant: str, context: Any = None) -> Any:
    """An rlms environment driven directly (no LM handler: the cells make no sub-calls)."""
    if variant == "local":
        from rlm.environments.local_repl import LocalREPL

        return LocalREPL(context_payload=context)
    from rlm.environments.ipython_repl import IPythonREPL

    return IPythonREPL(context_payload=context, kernel_mode="subprocess")


def kernel_pid(env: Any) -> int | None:
    """The ipykernel's process id (``None`` for in-process environments)."""
    km = getattr(env, "_km", None)
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    return getattr(process, "pid", None)


def make_rlm(cells: list[str], variant: str, child_latency: float = 0.0, **kwargs: Any) -> RLM:
    """An rlms RLM on the stand-in LM playing ``cells`` in ``variant``'s environment."""
    environment, env_kwargs = VARIANTS[variant]
    kwargs.setdefault("max_iterations", len(cells) + 2)
    return RLM(
        backend="standin",
        backend_kwargs={"script": Script(cells, child_latency), "model_name": "standin"},
        environment=environment,
        environment_kwargs=dict(env_kwargs),
        **kwargs,
    )


def close(rlm_: RLM) -> None:
    """``RLM.close`` when this rlms version has it."""
    closer = getattr(rlm_, "close", None)
    if closer is not None:
        closer()


def run_cell_answer(rlm_: RLM, name: str, context: Any = "hello") -> Any:
    """Run a completion whose cell answers JSON timings; return the decoded answer."""
    try:
        return run_cell(rlm_, name, context)
    finally:
        close(rlm_)


# -- workloads -----------------------------------------------------------------------------


def w_subcall(args: argparse.Namespace) -> None:
    """Per-call time of sequential ``llm_query`` calls in one cell."""
    cell = cell_sequential_calls(args.reps, warmup=max(20, args.reps // 20))
    times = run_cell_answer(make_rlm([cell], args.variant), "subcall")
    emit("subcall", "s", times, variant=args.variant)


def w_context(args: argparse.Namespace) -> None:
    """Context load time and memory for one size, in a fresh process (peak RSS is per process)."""
    env = new_env(args.variant)
    try:
        measure_context_load(args, env.add_context, env.execute_code, kernel_pid(env))
    finally:
        env.cleanup()


def w_cell(args: argparse.Namespace) -> None:
    """Trivial-cell time with an empty context and with a 10 MiB one, alternating rounds."""
    env = new_env(args.variant)
    try:
        measure_cell_overhead(args, env.add_context, env.execute_code)
    finally:
        env.cleanup()


def w_bridge(args: argparse.Namespace) -> None:
    """rlms has no equivalent of a remote bridge without a cloud account."""
    raise SystemExit("rlms has no remote environment that runs without a cloud account")


def w_fixed(args: argparse.Namespace) -> None:
    """Cost of a one-turn completion: new RLM each time, reused RLM, reused persistent RLM."""

    def one(rlm_: RLM) -> None:
        result = rlm_.completion("hello", root_prompt=ROOT_MARKER + "fixed")
        if result.response != "done":
            raise RuntimeError(f"unexpected answer {result.response[:500]!r}")

    def new_each() -> None:
        rlm_ = make_rlm([CELL_ANSWER], args.variant)
        one(rlm_)
        close(rlm_)

    new_each()  # warm-up (imports, first kernel start)
    emit(
        "fixed",
        "s",
        [timed(new_each) for _ in range(args.reps)],
        variant=args.variant,
        mode="new",
    )
    for mode, persistent in (("reused", False), ("persistent", True)):
        rlm_ = make_rlm([CELL_ANSWER], args.variant, persistent=persistent)
        try:
            one(rlm_)
            values = [timed(functools.partial(one, rlm_)) for _ in range(args.reps)]
        finally:
            close(rlm_)
            env = getattr(rlm_, "_persistent_env", None)
            if env is not None:
                env.cleanup()
        emit("fixed", "s", values, variant=args.variant, mode=mode)


w_e2e = e2e_workload(make_rlm, close)
w_batched = batched_workload(make_rlm, run_cell, close)
w_fanout = fanout_workload(make_rlm, run_cell_answer)
w_fixed_openai = fixed_openai_workload(RLM, close)


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
        RUNNERS, VARIANTS, argv, system="rlms", library_version=metadata.version("rlms")
    )


if __name__ == "__main__":
    sys.exit(main())
