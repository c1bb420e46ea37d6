"""Helpers shared by both benchmark workers: the stand-in LM script, the cells, sample output.

Standard library only: this module is imported by the worker that runs on rlm-core's venv
and by the one that runs on the ``rlms`` venv, so both run byte-identical cell code and the
same stand-in LM logic.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

SAMPLE_PREFIX = "BENCH-SAMPLE "
"""Worker stdout lines starting with this carry one JSON sample record for the driver."""

ROOT_MARKER = "BENCH-ROOT:"
"""Prefix of the ``root_prompt`` of a benchmark's top-level RLM; children get no root prompt."""

SUB_REPLY = "ok"
"""What the stand-in LM answers to every plain sub-call."""

CHILD_REPLY = "child-done"
"""The answer every child RLM of the fan-out workload submits."""

Messages = list[dict[str, Any]]


# -- output -------------------------------------------------------------------------------


def emit(name: str, unit: str, values: list[float], **meta: Any) -> None:
    """Print one sample record (a metric's raw values) for the driver to collect."""
    record = {"name": name, "unit": unit, "values": values, **meta}
    sys.stdout.write(SAMPLE_PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


def emit_info(**info: Any) -> None:
    """Print the worker's environment (interpreter and library versions)."""
    emit("info", "", [], **info)


def log(message: str) -> None:
    """Progress line on stderr (the driver shows it when a worker fails)."""
    sys.stderr.write(f"[worker {os.getpid()}] {message}\n")
    sys.stderr.flush()


def maxrss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a running process, in MiB, when readable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_text(n_bytes: int) -> str:
    """An ASCII document of exactly ``n_bytes`` characters (log-like lines)."""
    line = "2024-06-01T12:00:00Z station=ALPHA-7 wind=12.5kt gust=18kt note=nominal ok\n"
    reps = n_bytes // len(line) + 1
    return (line * reps)[:n_bytes]


# -- cells (identical for both systems) ---------------------------------------------------


def _finish(expr: str) -> str:
    return f"answer['content'] = _j.dumps({expr})\nanswer['ready'] = True\n"


def cell_sequential_calls(calls: int, warmup: int) -> str:
    """``calls`` sequential ``llm_query`` calls, each timed; answers the list of seconds."""
    return (
        "import json as _j, time as _t\n"
        f"for _i in range({warmup}):\n"
        "    llm_query('warm')\n"
        "_ts = []\n"
        f"for _i in range({calls}):\n"
        "    _t0 = _t.perf_counter()\n"
        "    _r = llm_query('ping')\n"
        "    _ts.append(_t.perf_counter() - _t0)\n"
        f"assert _r == {SUB_REPLY!r}, _r\n" + _finish("_ts")
    )


def cell_batched(batches: int, width: int) -> str:
    """One cold and ``batches`` warm ``llm_query_batched`` calls of ``width`` prompts, timed.

    The first batch of a completion opens the connections; the later ones reuse them.
    Answers ``[cold_seconds, warm_seconds_list, failed_replies, first_failure]``: failed
    replies are counted, not fatal, so a system whose later batches fail is still reported.
    """
    return (
        "import json as _j, time as _t\n"
        f"_p = ['q%d' % _k for _k in range({width})]\n"
        "_t0 = _t.perf_counter()\n"
        "_r = llm_query_batched(_p)\n"
        "_cold = _t.perf_counter() - _t0\n"
        f"_bad = [_x for _x in _r if _x != {SUB_REPLY!r}]\n"
        "_ts = []\n"
        f"for _i in range({batches}):\n"
        "    _t0 = _t.perf_counter()\n"
        "    _r = llm_query_batched(_p)\n"
        "    _ts.append(_t.perf_counter() - _t0)\n"
        f"    _bad += [_x for _x in _r if _x != {SUB_REPLY!r}]\n"
        + _finish("[_cold, _ts, len(_bad), _bad[:1]]")
    )


def cell_fanout(reps: int, width: int) -> str:
    """Time ``rlm_query_batched`` of one child ``reps`` times, then of ``width`` children.

    One-child runs come first, so a system whose concurrent children break the process
    (rlms's ``local`` changes the process-wide working directory) still gets a one-child
    figure. Answers ``[one_times, many_times, failed_one, failed_many, first_failure]``.
    """
    return (
        "import json as _j, time as _t\n"
        "_one, _many, _b1, _bn = [], [], [], []\n"
        "rlm_query_batched(['warm'])\n"
        f"for _i in range({reps}):\n"
        "    _t0 = _t.perf_counter()\n"
        "    _r = rlm_query_batched(['c0'])\n"
        "    _one.append(_t.perf_counter() - _t0)\n"
        f"    _b1 += [_x for _x in _r if _x != {CHILD_REPLY!r}]\n"
        f"rlm_query_batched(['w%d' % _k for _k in range({width})])\n"
        f"for _i in range({reps}):\n"
        "    _t0 = _t.perf_counter()\n"
        f"    _r = rlm_query_batched(['c%d' % _k for _k in range({width})])\n"
        "    _many.append(_t.perf_counter() - _t0)\n"
        f"    _bn += [_x for _x in _r if _x != {CHILD_REPLY!r}]\n"
        + _finish("[_one, _many, len(_b1), len(_bn), (_b1 + _bn)[:1]]")
    )


def cell_subcalls(count: int) -> str:
    """One end-to-end turn: ``count`` sequential sub-calls, results kept in a variable."""
    return f"_r = [llm_query('q%d' % _k) for _k in range({count})]\nprint(len(_r))\n"


CELL_ANSWER = "answer['content'] = 'done'\nanswer['ready'] = True\n"
"""The one cell of a fixed-cost completion."""

CELL_CHILD = f"answer['content'] = {CHILD_REPLY!r}\nanswer['ready'] = True\n"
"""What every child RLM runs (it answers in its first turn)."""


# -- the stand-in LM ----------------------------------------------------------------------


def repl(code: str) -> str:
    """Wrap code in a ```repl block, as a model would write it."""
    return f"```repl\n{code}```"


def _is_root_call(messages: Messages) -> bool:
    return bool(messages) and messages[0].get("role") == "system"


def _turn(messages: Messages) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


class Script:
    """The stand-in LM: deterministic replies, computed instantly.

    * A root call of the top-level RLM (its metadata message carries :data:`ROOT_MARKER`)
      gets ``cells[turn]`` as a ```repl block; past the last cell it gets a cell that
      reports the previous output as a failure, so a broken run never loops silently.
    * A root call of a child RLM (no marker) gets :data:`CELL_CHILD`, after sleeping
      ``child_latency`` seconds (a model's latency, which releases the GIL like network I/O).
    * A plain sub-call gets :data:`SUB_REPLY`.
    """

    def __init__(self, cells: list[str], child_latency: float = 0.0) -> None:
        self.cells = cells
        self.child_latency = child_latency

    def __call__(self, messages: Messages) -> str:
        if not _is_root_call(messages):
            return SUB_REPLY
        meta = str(messages[1].get("content", "")) if len(messages) > 1 else ""
        if ROOT_MARKER not in meta[:200]:
            if self.child_latency:
                time.sleep(self.child_latency)
            return repl(CELL_CHILD)
        turn = _turn(messages)
        if turn < len(self.cells):
            return repl(self.cells[turn])
        last = " | ".join(str(m.get("content", ""))[-1500:] for m in messages[-3:])
        return repl(f"answer['content'] = 'FAILED: ' + {last!r}\nanswer['ready'] = True\n")


def instant_answer(messages: Messages) -> str:
    """The instant LM of the ``eval`` workload: every root call gets the cell that answers
    ``done`` at once."""
    return repl(CELL_ANSWER) if _is_root_call(messages) else SUB_REPLY


def run_cell(rlm: Any, name: str, context: Any = "hello") -> Any:
    """Run a completion whose cell answers JSON timings (the same call in both systems);
    return the decoded answer."""
    return parse_answer(rlm.completion(context, root_prompt=ROOT_MARKER + name).response)


def usage_tokens(messages: Messages, reply: str) -> tuple[int, int]:
    """Pseudo-token usage (four characters a token), as rlm-core's scripted LM reports it."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return (chars + 3) // 4, (len(reply) + 3) // 4


def parse_answer(response: str) -> Any:
    """The JSON a timing cell put in its answer (raises with the text when the run failed)."""
    try:
        return json.loads(response)
    except (TypeError, ValueError):
        raise RuntimeError(f"the benchmark cell did not answer JSON: {response[:3000]}") from None


# -- shared command line ------------------------------------------------------------------

WORKLOADS = (
    "subcall",
    "batched",
    "context",
    "cell",
    "e2e",
    "bridge",
    "fixed",
    "fixed-openai",
    "fanout",
)
"""Worker workload names (the driver's workload numbers map onto these)."""

OURS_ONLY_WORKLOADS = ("eval",)
"""Workloads with no ``rlms`` counterpart at all: only rlm-core's worker runs them."""


def emit_fanout(
    one: list[float],
    many: list[float],
    failed_one: int,
    failed_many: int,
    first_failures: list[str],
    width: int,
    **meta: Any,
) -> None:
    """Emit the two fan-out series (one child, ``width`` children) with failure counts."""
    meta["first_failure"] = first_failures[0][:300] if first_failures else None
    emit(
        "fanout", "s", one, children=1, failed_children=failed_one, total_children=len(one), **meta
    )
    emit(
        "fanout",
        "s",
        many,
        children=width,
        failed_children=failed_many,
        total_children=len(many) * width,
        **meta,
    )


def worker_main(
    runners: dict[str, Callable[[argparse.Namespace], None]],
    variants: Iterable[str],
    argv: list[str] | None,
    **info: Any,
) -> int:
    """Parse a worker's arguments, report ``info`` and run one workload."""
    assert set(WORKLOADS) <= set(runners) <= set(WORKLOADS) | set(OURS_ONLY_WORKLOADS)
    parser = argparse.ArgumentParser(description="Run one benchmark workload.")
    parser.add_argument("workload", choices=sorted(runners))
    parser.add_argument("--variant", default="local", choices=sorted(variants))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--warm", type=int, default=4, help="warm batches per completion")
    parser.add_argument("--size-mib", type=float, default=1.0)
    parser.add_argument("--lm-url", default="")
    parser.add_argument("--child-latency-ms", type=float, default=0.0)
    parser.add_argument("--backend", default="openai", choices=FIXED_BACKENDS)
    args = parser.parse_args(argv)
    emit_info(python=sys.version.split()[0], **info)
    log(f"{args.workload} {args.variant}")
    with contextlib.suppress(BrokenPipeError):
        runners[args.workload](args)
    return 0


MIB = 1024 * 1024


def measure_context_load(
    args: argparse.Namespace,
    add_context: Callable[[Any, int], Any],
    run_cell: Callable[[str], Any],
    sandbox_pid: int | None,
) -> None:
    """Workload 3 on one environment: load a ``--size-mib`` text context ``--reps`` times,
    with host and sandbox peak memory around the first load."""
    size = int(args.size_mib * MIB)
    payload = make_text(size)
    gc.collect()
    host_before = maxrss_mib()
    sandbox_before = vm_hwm_mib(sandbox_pid) if sandbox_pid else None
    times = [timed(lambda: add_context(payload, 0))]
    host_after = maxrss_mib()
    sandbox_after = vm_hwm_mib(sandbox_pid) if sandbox_pid else None
    check = run_cell("print(len(context))")
    if check.stdout.strip() != str(size):
        raise RuntimeError(f"context check failed: {check.stdout!r} {check.stderr!r}")
    for _ in range(args.reps - 1):
        times.append(timed(lambda: add_context(payload, 0)))
    emit(
        "context",
        "s",
        times,
        variant=args.variant,
        size_mib=args.size_mib,
        bytes=size,
        host_added_mib=host_after - host_before,
        sandbox_before_mib=sandbox_before,
        sandbox_peak_mib=sandbox_after,
    )


def measure_cell_overhead(
    args: argparse.Namespace,
    add_context: Callable[[Any, int], Any],
    run_cell: Callable[[str], Any],
) -> None:
    """Workload 4 on one environment: a trivial cell with an empty context and with a
    ``--size-mib`` one, in alternating rounds."""
    big = make_text(int(args.size_mib * MIB))
    samples: dict[str, list[float]] = {"empty": [], "loaded": []}
    for round_ in range(4):
        label = "empty" if round_ % 2 == 0 else "loaded"
        add_context("" if label == "empty" else big, 0)
        for _ in range(10):
            run_cell("x = 1")
        for _ in range(args.reps // 2):
            samples[label].append(timed(lambda: run_cell("x = 1")))
    for label, values in samples.items():
        emit("cell", "s", values, variant=args.variant, context=label, size_mib=args.size_mib)


def e2e_workload(
    make_rlm: Callable[..., Any], close: Callable[[Any], None]
) -> Callable[[argparse.Namespace], None]:
    """Workload 5 for one system: whole completions of 20 turns of 5 sub-calls each, a new
    RLM every time, given that system's ``make_rlm`` and ``close``."""

    def w_e2e(args: argparse.Namespace) -> None:
        turns = 20
        cells = [cell_subcalls(5)] * (turns - 1) + [cell_subcalls(5) + CELL_ANSWER]
        context = make_text(100 * 1024)
        times: list[float] = []
        for i in range(args.reps + 1):
            start = time.perf_counter()
            rlm = make_rlm(cells, args.variant)
            result = rlm.completion(context, root_prompt=ROOT_MARKER + "e2e")
            elapsed = time.perf_counter() - start
            close(rlm)
            calls = result.usage_summary.model_usage_summaries["standin"].total_calls
            if result.response != "done" or calls != turns + 5 * turns:
                raise RuntimeError(f"unexpected run: {result.response[:500]!r}, {calls} calls")
            if i:  # the first run is a warm-up
                times.append(elapsed)
        emit("e2e", "s", times, variant=args.variant)

    return w_e2e


def batched_workload(
    make_rlm: Callable[..., Any],
    run_cell: Callable[[Any, str], Any],
    close: Callable[[Any], None],
) -> Callable[[argparse.Namespace], None]:
    """Workload 2 for one system: ``llm_query_batched`` of ``width`` prompts against the
    ``--lm-url`` server, given that system's ``make_rlm``, ``run_cell`` (one completion,
    its answer decoded) and ``close``.

    A new RLM per completion, ``--reps`` times: each times its first batch (``cold``: the
    connections are opened) and ``--warm`` more (``warm``). Then one RLM reused for
    ``--reps`` more completions after a first one: their first batches (``reused``).
    """

    def w_batched(args: argparse.Namespace) -> None:
        cold: list[float] = []
        warm: list[float] = []
        reused: list[float] = []
        failed, first = 0, None

        def new_rlm() -> Any:
            return make_rlm(
                [cell_batched(args.warm, args.width)],
                args.variant,
                other_backends=["openai"],
                other_backend_kwargs=[
                    {"base_url": args.lm_url, "api_key": "dummy", "model_name": "bench-lm"}
                ],
                max_concurrent_subcalls=args.width,
            )

        def one(rlm: Any) -> tuple[float, list[float]]:
            nonlocal failed, first
            one_cold, warm_times, bad, bad_first = run_cell(rlm, "batched")
            failed += bad
            first = first or (bad_first[0][:300] if bad_first else None)
            return one_cold, warm_times

        for _ in range(args.reps):
            rlm = new_rlm()
            try:
                one_cold, warm_times = one(rlm)
            finally:
                close(rlm)
            cold.append(one_cold)
            warm.extend(warm_times)
        rlm = new_rlm()
        try:
            one(rlm)
            reused.extend(one(rlm)[0] for _ in range(args.reps))
        finally:
            close(rlm)
        total = (2 * args.reps + 1) * (args.warm + 1) * args.width
        meta = {"variant": args.variant, "failed_calls": failed, "total_calls": total}
        for phase, values in (("cold", cold), ("warm", warm), ("reused", reused)):
            emit("batched", "s", values, phase=phase, first_failure=first, **meta)

    return w_batched


def fanout_workload(
    make_rlm: Callable[..., Any], run_cell_answer: Callable[[Any, str], Any]
) -> Callable[[argparse.Namespace], None]:
    """Workload 7b for one system: ``rlm_query_batched`` of one child vs ``width`` children
    (max_depth=2), given that system's ``make_rlm`` and ``run_cell_answer``."""

    def w_fanout(args: argparse.Namespace) -> None:
        rlm = make_rlm(
            [cell_fanout(args.reps, args.width)],
            args.variant,
            child_latency=args.child_latency_ms / 1000,
            max_depth=2,
            max_concurrent_subcalls=args.width,
        )
        one, many, failed_one, failed_many, first = run_cell_answer(rlm, "fanout")
        emit_fanout(
            one,
            many,
            failed_one,
            failed_many,
            first,
            args.width,
            variant=args.variant,
            child_latency_ms=args.child_latency_ms,
        )

    return w_fanout


FIXED_BACKENDS = ("openai", "gemini", "portkey")
"""Backends the ``fixed-openai`` workload can use as the root LM (``--backend``)."""


def fixed_backend_kwargs(backend: str, lm_url: str) -> dict[str, Any]:
    """``backend_kwargs`` of workload 7's root LM, the same for both systems, against the
    OpenAI-style ``lm_url``. ``rlms``'s ``gemini`` client takes no address: both systems'
    Gemini clients read it from ``GOOGLE_GEMINI_BASE_URL``, which this sets."""
    kwargs: dict[str, Any] = {"base_url": lm_url, "api_key": "dummy", "model_name": "lm"}
    if backend == "gemini":
        os.environ["GOOGLE_GEMINI_BASE_URL"] = lm_url.removesuffix("/v1")
        del kwargs["base_url"]
    elif backend == "portkey":
        kwargs["provider"] = "openai"
    return kwargs


def fixed_openai_workload(
    rlm_class: Callable[..., Any], close: Callable[[Any], None]
) -> Callable[[argparse.Namespace], None]:
    """Workload 7 over HTTP for one system: a one-turn completion whose root LM is that
    system's own ``--backend`` (``openai``, ``gemini`` or ``portkey``) against ``--lm-url`` (a
    local server whose every reply is :data:`CELL_ANSWER`), with a new RLM each call and with
    one RLM reused, given that system's ``RLM`` class and ``close``."""

    def w_fixed_openai(args: argparse.Namespace) -> None:
        backend_kwargs = fixed_backend_kwargs(args.backend, args.lm_url)

        def new_rlm() -> Any:
            return rlm_class(
                backend=args.backend,
                backend_kwargs=backend_kwargs,
                environment="local",
                max_iterations=3,
            )

        def one(rlm: Any) -> None:
            result = rlm.completion("hello", root_prompt=ROOT_MARKER + "fixed-openai")
            if result.response != "done":
                raise RuntimeError(f"unexpected answer {result.response[:500]!r}")

        def new_each() -> None:
            rlm = new_rlm()
            try:
                one(rlm)
            finally:
                close(rlm)

        new_each()  # warm-up (imports, the first connection)
        values = [timed(new_each) for _ in range(args.reps)]
        meta = {"variant": args.variant, "backend": args.backend}
        emit("fixed-openai", "s", values, mode="new", **meta)
        rlm = new_rlm()
        try:
            one(rlm)
            values = [timed(lambda: one(rlm)) for _ in range(args.reps)]
        finally:
            close(rlm)
        emit("fixed-openai", "s", values, mode="reused", **meta)

    return w_fixed_openai
