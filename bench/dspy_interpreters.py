"""``dspy.RLM`` forward passes on DSPy's interpreters and on rlm-dspy's, side by side.

    .venv/bin/python bench/dspy_interpreters.py [--runs 10]

Each forward pass is the same four-step program (look at the data, two sub-LM calls through
``llm_query_batched`` and ``llm_query``, a failing step, ``SUBMIT``) with a scripted root LM and
a scripted sub-LM, so what is measured is the interpreter: creating it, starting its sandbox,
installing DSPy's sandbox facade, running the steps, shutting it down. "start" is the
environment's own start and stop (rlm-core alone, no DSPy), measured the same number of times;
"overhead" is the median forward pass minus LocalInterpreter's. Nothing here is a test: the
numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

import dspy
import rlm_dspy
from dspy import lm15
from dspy.utils.dummies import DummyLM
from rlm_dspy.environments import make_environment

from rlm_core import Session

STEPS = [
    ("Look.", "words = context.split()\nprint(len(words), words[:2])"),
    ("Ask.", "shouted = llm_query_batched(words[:3])\nprint(shouted, llm_query(prompt=query))"),
    ("Typo.", "print(undefined_name)"),
    ("Submit.", "SUBMIT(answer='-'.join(shouted))"),
]


class Upper:
    """A scripted sub-LM engine: answers with the prompt upper-cased."""

    def complete(self, request: Any) -> Any:
        return lm15.Response(
            id="bench",
            model="bench",
            message=lm15.Message.assistant(lm15.TextPart(request.messages[-1].text.upper())),
            finish_reason="stop",
            usage=lm15.Usage(),
        )


def forward_pass(factory: Callable[[], Any]) -> float:
    """Seconds one forward pass takes on ``factory``'s interpreters."""
    rlm = dspy.RLM(
        "context, query -> answer",
        max_iters=5,
        sub_lm=dspy.LM("bench/sub", engine=Upper(), cache=False),
        interpreter_factory=factory,
    )
    root = DummyLM([{"reasoning": r, "code": c} for r, c in STEPS])
    with dspy.context(lm=root):
        started = time.perf_counter()
        answer = rlm(context="alpha beta gamma delta", query="which?").answer
        elapsed = time.perf_counter() - started
    assert answer == "ALPHA-BETA-GAMMA", answer
    return elapsed


class _NoSubcalls:
    def llm_query(self, prompt: Any, model: str | None = None) -> Any:
        raise NotImplementedError

    llm_query_batched = rlm_query = rlm_query_batched = llm_query


def environment_start(name: str, settings: dict[str, Any]) -> float:
    """Seconds to start an rlm-core environment, run one cell and close it."""
    environment = make_environment(name, settings)
    started = time.perf_counter()
    environment.start(Session(subcalls=_NoSubcalls()))
    environment.execute("1")
    environment.close()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs

    rows: list[tuple[str, str, str, str]] = []
    baseline: float | None = None

    def measure(
        label: str, factory: Callable[[], Any], start: tuple[str, dict[str, Any]] | None
    ) -> None:
        nonlocal baseline
        forward_pass(factory)  # warm-up: imports, caches, fork servers
        samples = [forward_pass(factory) for _ in range(runs)]
        value = median_ms(samples)
        if baseline is None:
            baseline = value
        start_ms = "-"
        if start is not None:
            environment_start(*start)
            start_ms = f"{median_ms([environment_start(*start) for _ in range(runs)]):.1f}"
        overhead = f"{value - baseline:+.1f}"
        rows.append((label, f"{value:.1f}", start_ms, overhead))

    measure("dspy.LocalInterpreter", dspy.LocalInterpreter, None)
    if shutil.which("deno"):
        measure("dspy.PythonInterpreter (Deno)", dspy.PythonInterpreter, None)
    else:
        rows.append(("dspy.PythonInterpreter (Deno)", "Deno not installed", "-", "-"))
    for label, name, settings in [
        ("rlm_dspy local", "local", {}),
        ("rlm_dspy subprocess", "subprocess", {}),
        ("rlm_dspy subprocess prewarm=False", "subprocess", {"prewarm": False}),
        ("rlm_dspy loopback carrier=stdio", "loopback", {"carrier": "stdio"}),
    ]:
        measure(label, rlm_dspy.interpreter_factory(name, **settings), (name, settings))

    header = ("interpreter", "forward pass ms (median)", "env start+stop ms", "vs Local ms")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(f"dspy {dspy.__version__}, {runs} runs each, 4-step program, scripted LMs")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
