"""ANS: the answer protocol (``answer["content"]``, ``answer["ready"]``)."""

from __future__ import annotations

from rlm_conformance.cases import case
from rlm_conformance.doubles import Script, repl
from rlm_conformance.fixtures import MakeRLM
from rlm_core.environments.base import Environment


class AnswerTests:
    """A cell ends the run by setting ``answer["ready"] = True``."""

    @case("ANS-001", "answer['ready'] = True reports answer['content'] as the final answer")
    def test_ready(self, env: Environment) -> None:
        result = env.execute("answer['content'] = 'forty-two'\nanswer['ready'] = True")
        assert result.error is None and result.final_answer == "forty-two"

    @case("ANS-002", "content without ready is not a final answer")
    def test_not_ready(self, env: Environment) -> None:
        result = env.execute("answer['content'] = 'draft'")
        assert result.error is None and result.final_answer is None

    @case("ANS-003", "content set in one cell and ready in the next")
    def test_across_cells(self, env: Environment) -> None:
        assert env.execute("answer['content'] = 'built up'").final_answer is None
        assert env.execute("answer['ready'] = True").final_answer == "built up"

    @case("ANS-004", "content that is not a string is reported as its text")
    def test_not_a_string(self, env: Environment) -> None:
        result = env.execute("answer['content'] = 42\nanswer['ready'] = True")
        assert result.final_answer == "42"

    @case("ANS-005", "a cell that fails after setting ready still reports the answer")
    def test_ready_then_error(self, env: Environment) -> None:
        result = env.execute("answer['content'] = 'saved'\nanswer['ready'] = True\n1 / 0")
        assert result.error is not None and result.final_answer == "saved"

    @case("ANS-006", "a completion ends at the cell that sets ready, with its content")
    def test_completion_ends(self, make_rlm: MakeRLM) -> None:
        script = Script(
            [
                repl("partial = context.upper()"),
                repl("answer['content'] = partial + '!'\nanswer['ready'] = True"),
                repl("answer['content'] = 'too late'\nanswer['ready'] = True"),
            ]
        )
        result = make_rlm(script).completion("done")
        assert result.response == "DONE!"
        assert script.root_calls == 2
