"""Full ``dspy.RLM`` forward passes with a scripted root LM and a scripted sub-LM."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import dspy
import pytest
import rlm_dspy
from dspy_doubles import (
    AGENT_ENVIRONMENTS,
    ENVIRONMENTS,
    environment_name,
    scripted_root_lm,
    scripted_sub_lm,
)

pytestmark = pytest.mark.timeout(120)

PROGRAM_STEPS = [
    (
        "Look at the data first.",
        "```python\nwords = context.split()\nprint(len(words), words[:2])\n```",
    ),
    (
        "Ask the sub-LM about each word, then about the query.",
        "shouted = llm_query_batched(words[:3])\nprint(shouted, llm_query(prompt=query))",
    ),
    ("Oops, a typo.", "print(undefined_name)"),
    ("Submit.", "SUBMIT(answer='-'.join(shouted), count=len(words))"),
]
"""A program written for DSPy's default interpreter: nothing in it knows about rlm-core."""


def factory_for(test_id: str, **settings: Any) -> rlm_dspy.InterpreterFactory:
    return rlm_dspy.interpreter_factory(
        environment_name(test_id), **{**ENVIRONMENTS[test_id], **settings}
    )


def run_program(interpreter_factory: Any) -> tuple[dspy.Prediction, list[tuple[str, int, str]]]:
    sub_lm, engine = scripted_sub_lm()
    rlm = dspy.RLM(
        "context, query -> answer: str, count: int",
        max_iters=5,
        sub_lm=sub_lm,
        interpreter_factory=interpreter_factory,
    )
    with dspy.context(lm=scripted_root_lm(PROGRAM_STEPS)):
        prediction = rlm(context="alpha beta gamma delta", query="which?")
    return prediction, engine.calls


@pytest.mark.parametrize("test_id", list(ENVIRONMENTS))
def test_a_default_interpreter_program_gets_the_same_answer(test_id: str) -> None:
    expected, expected_calls = run_program(dspy.LocalInterpreter)
    prediction, calls = run_program(factory_for(test_id))
    assert (prediction.answer, prediction.count) == ("ALPHA-BETA-GAMMA", 4)
    assert (prediction.answer, prediction.count) == (expected.answer, expected.count)
    outputs = [step["output"] for step in prediction.trajectory]
    assert outputs == [step["output"] for step in expected.trajectory]
    assert outputs[2] == "[Error] NameError: name 'undefined_name' is not defined"
    assert sorted(text for text, _, _ in calls) == sorted(text for text, _, _ in expected_calls)
    assert {pid for _, pid, _ in calls} == {os.getpid()}  # the sub-LM ran on the host


@pytest.mark.parametrize("test_id", AGENT_ENVIRONMENTS)
def test_sub_calls_cross_the_bridge_from_another_process(test_id: str) -> None:
    sub_lm, engine = scripted_sub_lm()
    steps = [("Where am I?", "import os\nSUBMIT(answer=llm_query(prompt=str(os.getpid())))")]
    rlm = dspy.RLM("question -> answer", sub_lm=sub_lm, interpreter_factory=factory_for(test_id))
    with dspy.context(lm=scripted_root_lm(steps)):
        answer = rlm(question="?").answer
    sandbox_pid = int(answer)
    assert sandbox_pid != os.getpid()
    assert engine.calls == [(answer, os.getpid(), engine.calls[0][2])]


@pytest.mark.parametrize("test_id", list(ENVIRONMENTS))
def test_the_sandbox_dspy_facade_works_with_only_json_crossing(test_id: str) -> None:
    code = (
        "import sys\n"
        "import dspy\n"
        "class Solver(dspy.Module):\n"
        "    def __init__(self):\n"
        "        self.ask = dspy.Predict('question -> answer')\n"
        "        self.deep = dspy.RLM('question -> answer')\n"
        "solver = Solver()\n"
        "SUBMIT(answer=solver.ask(question='why?').answer + '+' + "
        "solver.deep(question='deeper?').answer, "
        "where=[type(dspy).__name__, 'dspy.primitives' in sys.modules])"
    )
    sub_lm, engine = scripted_sub_lm(answer="because")
    rlm = dspy.RLM(
        "question -> answer, where: list",
        sub_lm=sub_lm,
        interpreter_factory=factory_for(test_id),
    )
    with dspy.context(lm=scripted_root_lm([("Use sub-agents.", code)])):
        prediction = rlm(question="?")
    assert prediction.answer == "because+because"
    # In another process the sandbox holds only the facade, never the host's DSPy.
    in_host = environment_name(test_id) == "local"
    assert prediction.where == ["module", in_host]
    assert len(engine.calls) == 2  # the Predict, then the nested RLM's one action


@pytest.mark.parametrize("test_id", ["subprocess", "loopback-stdio"])
def test_configured_factory_and_its_instructions_reach_the_model(test_id: str) -> None:
    factory = factory_for(test_id, cell_timeout=30)
    root = scripted_root_lm([("Done.", "SUBMIT(answer=str(6 * 7))")])
    with dspy.context(interpreter_factory=factory, lm=root):
        rlm = dspy.RLM("question -> answer")
        assert rlm(question="?").answer == "42"
    prompt = "\n".join(str(message["content"]) for message in root.history[-1]["messages"])
    assert factory.execution_instructions in prompt
    assert "at most 30 seconds" in prompt


def test_async_forward_on_subprocess() -> None:
    steps = [("Compute.", "total = sum(values)"), ("Submit.", "SUBMIT(answer=str(total))")]
    rlm = dspy.RLM("values: list[int] -> answer", interpreter_factory=factory_for("subprocess"))

    async def run() -> str:
        with dspy.context(lm=scripted_root_lm(steps)):
            return str((await rlm.acall(values=[19, 23])).answer)

    assert asyncio.run(run()) == "42"


def test_forward_passes_in_threads_each_get_their_own_sandbox() -> None:
    factory = factory_for("subprocess")
    pids: dict[int, int] = {}
    errors: list[BaseException] = []

    def forward(index: int) -> None:
        steps = [("Report.", f"import os\nSUBMIT(answer=str(os.getpid()) + ':{index}')")]
        rlm = dspy.RLM("question -> answer", interpreter_factory=factory)
        try:
            with dspy.context(lm=scripted_root_lm(steps)):
                pid, got = rlm(question="?").answer.split(":")
            assert int(got) == index
            pids[index] = int(pid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=forward, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(pids) == list(range(6))
    assert len(set(pids.values())) == 6
    assert os.getpid() not in pids.values()
