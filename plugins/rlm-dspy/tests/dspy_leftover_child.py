"""Runs ``dspy.RLM`` programs in a process of its own and reports what each left behind.

Usage: ``python dspy_leftover_child.py ENVIRONMENT SETTINGS_JSON``. ``TMPDIR`` should be a new
directory, so every ``rlm-*`` directory created there belongs to this run. After each scenario
(a forward pass, an exception in the program, a crashed sandbox) it lists the descendants of
this process whose command line mentions ``rlm_core.agent`` and the ``rlm-*`` entries of
``TMPDIR``, and prints all of it as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import dspy
import rlm_dspy
from dspy_doubles import agent_descendants, scripted_root_lm, scripted_sub_lm


class FailingEngine:
    """A root LM that answers the first action and then fails."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("the root LM is unavailable")
        reply = "[[ ## reasoning ## ]]\nstart\n\n[[ ## code ## ]]\nx = llm_query(prompt='a')"
        return dspy.lm15.Response(
            id="failing",
            model="failing",
            message=dspy.lm15.Message.assistant(dspy.lm15.TextPart(reply)),
            finish_reason="stop",
            usage=dspy.lm15.Usage(),
        )


def forward(factory: Any) -> str:
    sub_lm, _ = scripted_sub_lm()
    steps = [("Ask.", "x = llm_query(prompt='a')"), ("Submit.", "SUBMIT(answer=x)")]
    rlm = dspy.RLM("question -> answer", sub_lm=sub_lm, interpreter_factory=factory)
    with dspy.context(lm=scripted_root_lm(steps)):
        return str(rlm(question="?").answer)


def failing_program(factory: Any) -> str:
    sub_lm, _ = scripted_sub_lm()
    root = dspy.LM("scripted/root", engine=FailingEngine(), cache=False, num_retries=0)
    rlm = dspy.RLM("question -> answer", sub_lm=sub_lm, interpreter_factory=factory)
    with dspy.context(lm=root):
        return str(rlm(question="?").answer)


def crash(factory: Any) -> str:
    steps = [("Set up.", "kept = 1"), ("Crash.", "import os\nos._exit(3)")]
    rlm = dspy.RLM("question -> answer", interpreter_factory=factory)
    with dspy.context(lm=scripted_root_lm(steps)):
        return str(rlm(question="?").answer)


SCENARIOS: dict[str, Callable[[Any], str]] = {
    "forward": forward,
    "exception": failing_program,
    "crash": crash,
}


def main() -> None:
    environment, settings = sys.argv[1], json.loads(sys.argv[2])
    factory = rlm_dspy.interpreter_factory(environment, **settings)
    report: dict[str, Any] = {}
    for name, scenario in SCENARIOS.items():
        if name == "crash" and environment == "local":
            continue  # os._exit in the host's own process would end this run
        try:
            outcome = f"returned {scenario(factory)!r}"
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}: {exc}"
        report[name] = {
            "outcome": outcome,
            "agents": agent_descendants(),
            "dirs": sorted(e for e in os.listdir(tempfile.gettempdir()) if e.startswith("rlm-")),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
