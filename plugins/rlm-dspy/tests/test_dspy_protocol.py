"""DSPy's ``CodeInterpreter`` protocol, case by case, on every environment."""

from __future__ import annotations

import contextvars
import os
import threading
from typing import Any

import dspy
import pytest
from dspy.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreter,
    CodeInterpreterError,
    FinalOutput,
)
from dspy_doubles import AGENT_ENVIRONMENTS, MakeInterpreter, alive

pytest_plugins = ("dspy_fixtures",)  # the env_id and make_interpreter fixtures
pytestmark = pytest.mark.timeout(120)

agent_only = pytest.mark.parametrize("env_id", AGENT_ENVIRONMENTS, indirect=True)


def test_it_is_a_code_interpreter(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    assert isinstance(interpreter, CodeInterpreter)
    assert isinstance(interpreter.execution_instructions, str)


def test_state_persists_and_variables_are_bound_before_the_code(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("import math\ndef double(x):\n    return 2 * x\nkept = 20") is None
    assert interpreter.execute("double(kept) + math.floor(extra)", {"extra": 2.5}) == 42
    assert interpreter.execute("extra", {"extra": {"nested": [1, None, "x"]}}) == {
        "nested": [1, None, "x"]
    }
    assert interpreter.execute("kept") == 20


def test_value_of_last_expression_else_printed_output_else_none(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("6 * 7") == 42
    assert interpreter.execute("print('hello')\nprint('world')") == "hello\nworld"
    assert interpreter.execute("x = 1") is None
    assert interpreter.execute("{1, 2}") == "{1, 2}"  # not JSON: its repr


def test_tools_take_keyword_and_positional_json_arguments(
    make_interpreter: MakeInterpreter,
) -> None:
    seen: list[Any] = []

    def search(query: str, limit: int = 10, *, filters: dict[str, Any] | None = None) -> Any:
        seen.append((query, limit, filters))
        return {"query": query, "hits": list(range(limit)), "filters": filters}

    interpreter = make_interpreter({"search": search})
    result = interpreter.execute("search(query='q', limit=2, filters={'year': [2021]})")
    assert result == {"query": "q", "hits": [0, 1], "filters": {"year": [2021]}}
    assert interpreter.execute("search('p', 1)['hits']") == [0]
    assert seen == [("q", 2, {"year": [2021]}), ("p", 1, None)]


def test_the_tools_dict_is_read_at_each_execution(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter({"old": lambda: "old"})
    assert interpreter.execute("old()") == "old"
    interpreter.tools.clear()
    interpreter.tools["new"] = lambda: "new"
    assert interpreter.execute("new()") == "new"
    with pytest.raises(CodeExecutionError, match="NameError: name 'old' is not defined"):
        interpreter.execute("old()")
    interpreter.tools["new"] = lambda: "replaced"
    assert interpreter.execute("new()") == "replaced"


def test_tool_calls_from_threads_run_concurrently(make_interpreter: MakeInterpreter) -> None:
    # Four calls must all be in flight at once for the barrier to open; if the host
    # served them one at a time, the first would wait until the barrier gives up.
    barrier = threading.Barrier(4, timeout=60)

    def meet(index: int) -> int:
        barrier.wait()
        return index * 10

    interpreter = make_interpreter({"meet": meet})
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    results = list(pool.map(lambda i: meet(index=i), range(4)))\n"
        "results"
    )
    assert interpreter.execute(code) == [0, 10, 20, 30]


def test_tools_run_in_the_callers_dspy_context(make_interpreter: MakeInterpreter) -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    def read() -> list[Any]:
        return [marker.get(), dspy.settings.get("max_errors")]

    interpreter = make_interpreter({"read": read})
    token = marker.set("visible")
    try:
        with dspy.context(max_errors=7):
            assert interpreter.execute("read()") == ["visible", 7]
    finally:
        marker.reset(token)


def test_async_tools_are_awaited(make_interpreter: MakeInterpreter) -> None:
    async def add(*, left: int, right: int) -> int:
        return left + right

    interpreter = make_interpreter({"add": add})
    assert interpreter.execute("add(left=19, right=23)") == 42


def test_submit_returns_final_output_with_the_typed_fields(
    make_interpreter: MakeInterpreter,
) -> None:
    fields = [{"name": "answer", "type": "str"}, {"name": "score", "type": "int"}]
    interpreter = make_interpreter(output_fields=fields)
    assert interpreter.execute("SUBMIT(answer='yes', score=42)") == FinalOutput(
        {"answer": "yes", "score": 42}
    )
    assert interpreter.execute("SUBMIT('no', 7)\nprint('not reached')") == FinalOutput(
        {"answer": "no", "score": 7}
    )
    with pytest.raises(CodeExecutionError, match="missing 1 required positional argument"):
        interpreter.execute("SUBMIT('only one')")
    interpreter.output_fields = None
    assert interpreter.execute("SUBMIT([1, 'two'])") == FinalOutput({"output": [1, "two"]})


def test_errors_raise_code_execution_error_with_the_models_text(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter({"fail": lambda: 1 / 0})
    with pytest.raises(CodeExecutionError) as caught:
        interpreter.execute("kept = 1\nraise ValueError('bad input')")
    assert str(caught.value) == "ValueError: bad input"
    with pytest.raises(CodeExecutionError) as caught:
        interpreter.execute("fail()")
    assert str(caught.value) == "RuntimeError: ZeroDivisionError: division by zero"
    assert interpreter.execute("kept") == 1  # the session goes on


def test_invalid_syntax_raises_syntax_error(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    with pytest.raises(SyntaxError, match="invalid syntax"):
        interpreter.execute("if")
    with pytest.raises(SyntaxError, match="outside function"):
        interpreter.execute("return 1")
    assert interpreter.execute("1 + 1") == 2


def test_start_is_lazy_and_idempotent(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("import os\nos.getpid()") > 0  # started lazily
    first = interpreter.execute("os.getpid()")
    interpreter.start()
    interpreter.start()
    assert interpreter.execute("os.getpid()") == first


def test_shutdown_ends_the_session_and_is_idempotent(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    pid = interpreter.execute("import os\nos.getpid()")
    interpreter.shutdown()
    interpreter.shutdown()
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.execute("1")
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.start()
    if pid != os.getpid():
        assert not alive(pid)


@agent_only
def test_a_crashed_sandbox_is_terminal(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    pid = interpreter.execute("import os\nkept = 1\nos.getpid()")
    with pytest.raises(CodeInterpreterError, match="died") as caught:
        interpreter.execute("os._exit(3)")
    assert type(caught.value) is CodeInterpreterError  # not recoverable
    assert "state was lost" in str(caught.value)
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.execute("kept")
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.start()
    assert not alive(pid)


@agent_only
def test_a_timed_out_sandbox_is_terminal(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter(cell_timeout=0.5)
    assert "at most 0.5 seconds" in interpreter.execution_instructions
    pid = interpreter.execute("import os, time\nos.getpid()")
    with pytest.raises(CodeInterpreterError, match="timeout") as caught:
        interpreter.execute("try:\n    time.sleep(60)\nexcept Exception:\n    pass")
    assert type(caught.value) is CodeInterpreterError
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.execute("1")
    assert not alive(pid)


def test_a_tool_cannot_reenter_its_interpreter(make_interpreter: MakeInterpreter) -> None:
    holder: dict[str, Any] = {}

    def nested() -> Any:
        return holder["interpreter"].execute("'nested'")

    interpreter = holder["interpreter"] = make_interpreter({"nested": nested})
    with pytest.raises(CodeExecutionError, match="already has an active execution"):
        interpreter.execute("nested()")
    assert interpreter.execute("40 + 2") == 42


def test_only_json_crosses(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter({"handle": lambda: threading.Lock(), "echo": lambda x: x})
    with pytest.raises(CodeExecutionError, match="value tool 'handle' returned is not JSON"):
        interpreter.execute("handle()")
    with pytest.raises(CodeExecutionError, match="arguments of tool 'echo' must be JSON"):
        interpreter.execute("echo(lambda: 1)")
    assert interpreter.execute("echo((1, 2))") == [1, 2]
    with pytest.raises(CodeInterpreterError, match="not JSON-compatible"):
        interpreter.execute("1", {"lock": threading.Lock()})


def test_names_are_checked_before_anything_starts(make_interpreter: MakeInterpreter) -> None:
    with pytest.raises(ValueError, match="invalid names"):
        make_interpreter({"not-valid": lambda: 1})
    interpreter = make_interpreter()
    for variables in ({"class": 1}, {"SUBMIT": 1}, {"__rlm_dspy_run__": 1}):
        with pytest.raises(CodeInterpreterError, match="invalid names"):
            interpreter.execute("1", variables)
    interpreter.output_fields = [{"name": "answer"}, {"name": "answer"}]
    with pytest.raises(ValueError, match="unique"):
        interpreter.execute("1")
    interpreter.output_fields = None
    assert interpreter.execute("2") == 2
