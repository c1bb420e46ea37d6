"""DSPy's own tests of its interpreters, adapted to run against rlm-dspy's interpreters.

Sources: ``tests/primitives/test_local_interpreter.py``, ``test_python_interpreter.py`` and
``test_code_interpreter.py`` of stanfordnlp/dspy (the 3.4 line). Where DSPy's two interpreters
disagree this follows ``LocalInterpreter`` (trailing newlines stripped from printed output, a
tool's ``None`` stays ``None``, non-JSON tool results are errors rather than ``str()``-ed), and
each adapted expectation says so. Tests of Deno's flags, WASM file mounts and worker internals
have no counterpart and are left out.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import random
import signal
import threading
from collections import namedtuple
from datetime import datetime
from typing import Any, NamedTuple

import dspy
import pytest
import rlm_dspy
from dspy.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreterError,
    FinalOutput,
)
from dspy.utils.callback import BaseCallback
from dspy.utils.dummies import DummyLM
from dspy_doubles import AGENT_ENVIRONMENTS, MakeInterpreter
from pydantic import BaseModel, ConfigDict

pytest_plugins = ("dspy_fixtures",)  # the env_id and make_interpreter fixtures
pytestmark = pytest.mark.timeout(120)

agent_only = pytest.mark.parametrize("env_id", AGENT_ENVIRONMENTS, indirect=True)


class _Hit(BaseModel):
    document_id: int
    title: str


class _TimestampedHit(_Hit):
    created_at: datetime


class _UnserializableValue:
    pass


class _UnserializableModel(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    value: _UnserializableValue


@dataclasses.dataclass
class _BBox:
    x0: float
    top: float
    x1: float
    bottom: float


@dataclasses.dataclass
class _PageTable:
    index: int
    bbox: _BBox
    strategy: str


class _TypedPoint(NamedTuple):
    x: float
    y: float
    label: str


_Point = namedtuple("_Point", ["x", "y"])


# -- test_code_interpreter.py ------------------------------------------------------------


def test_code_interpreter_errors_are_dspy_errors() -> None:
    error = CodeInterpreterError("boom")
    assert isinstance(error, dspy.DSPyError) and isinstance(error, RuntimeError)
    assert isinstance(CodeExecutionError("boom"), CodeInterpreterError)


# -- test_local_interpreter.py -----------------------------------------------------------


def test_persistent_worker_captures_stdout(
    make_interpreter: MakeInterpreter, env_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    interpreter = make_interpreter()
    pid = interpreter.execute("import os\nos.getpid()")
    assert (pid != os.getpid()) == (env_id in AGENT_ENVIRONMENTS)
    interpreter.execute("remembered = 41")
    assert interpreter.execute("remembered + 1") == 42
    assert interpreter.execute("print('guest only')") == "guest only"
    assert capsys.readouterr().out == ""


def test_tools_and_typed_submit(make_interpreter: MakeInterpreter) -> None:
    fields = [{"name": "answer", "type": "str"}, {"name": "score", "type": "int"}]
    interpreter = make_interpreter({"add": lambda *, left, right: left + right}, fields)
    assert interpreter.execute("add(left=19, right=23)") == 42
    result = interpreter.execute("SUBMIT(answer='yes', score=42)")
    assert isinstance(result, FinalOutput)
    assert result.output == {"answer": "yes", "score": 42}


@pytest.mark.parametrize("name", ["not-valid", "class", "SUBMIT", "__builtins__"])
def test_invalid_tool_names_fail_without_starting_or_consuming_session(
    make_interpreter: MakeInterpreter, name: str
) -> None:
    with pytest.raises(ValueError, match="invalid names"):
        make_interpreter({name: lambda: 1})
    interpreter = make_interpreter()
    interpreter.tools[name] = lambda: 1
    with pytest.raises(ValueError, match="invalid names"):
        interpreter.execute("1")
    assert not interpreter.started
    interpreter.tools = {}
    assert interpreter.execute("6 * 7") == 42


@pytest.mark.parametrize(
    "output_fields",
    [
        [{"name": "class"}],
        [{"name": "not-valid"}],
        [{"name": "answer"}, {"name": "answer"}],
        [{"type": "str"}],
        [{"name": "answer", "default": object()}],
    ],
)
def test_invalid_output_fields_fail_without_consuming_session(
    make_interpreter: MakeInterpreter, output_fields: list[dict[str, Any]]
) -> None:
    with pytest.raises(ValueError):
        make_interpreter(output_fields=output_fields)
    interpreter = make_interpreter()
    assert interpreter.execute("remembered = 41") is None
    interpreter.output_fields = output_fields
    with pytest.raises(ValueError):
        interpreter.execute("1")
    assert interpreter.started
    interpreter.output_fields = [{"name": "answer"}]
    assert interpreter.execute("remembered + 1") == 42
    assert interpreter.execute("SUBMIT(answer=42)").output == {"answer": 42}


def test_reserved_variable_names_fail_without_starting_or_consuming_session(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter({"add": lambda left, right: left + right})
    for variables in ({"class": 1}, {"SUBMIT": "x"}, {"__builtins__": {}}, {"add": "x"}):
        with pytest.raises(CodeInterpreterError, match="invalid names"):
            interpreter.execute("1", variables=variables)
        assert not interpreter.started
    assert interpreter.execute("len([1])") == 1
    assert interpreter.execute("add(19, 23)") == 42
    assert interpreter.execute("SUBMIT(42)").output == {"output": 42}


def test_guest_cannot_corrupt_interpreter_owned_globals_across_executions(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter({"add": lambda left, right: left + right})
    interpreter.execute("__builtins__['len'] = None\nSUBMIT = None\nadd = None")
    assert interpreter.execute("len([1])") == 1
    assert interpreter.execute("add(19, 23)") == 42
    assert interpreter.execute("SUBMIT(42)").output == {"output": 42}
    # Adapted: SUBMIT is a plain function here, with no owner object to reach through.
    with pytest.raises(CodeExecutionError, match="__self__"):
        interpreter.execute("SUBMIT.__self__._builtins['len'] = None")
    assert interpreter.execute("len([1])") == 1


@agent_only
def test_errors_are_recoverable_but_timeout_is_terminal(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter(cell_timeout=0.5)
    with pytest.raises(SyntaxError):
        interpreter.execute("if")
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
        interpreter.execute("1 / 0")
    assert interpreter.execute("6 * 7") == 42
    with pytest.raises(CodeInterpreterError, match="timeout"):
        interpreter.execute("import time\ntime.sleep(10)")
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.execute("1")


def test_async_host_tool(make_interpreter: MakeInterpreter) -> None:
    async def add(*, left: int, right: int) -> int:
        return left + right

    assert make_interpreter({"add": add}).execute("add(left=19, right=23)") == 42


def test_async_host_tool_preserves_context(make_interpreter: MakeInterpreter) -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="missing")
    token = marker.set("visible")

    async def read_marker() -> str:
        return marker.get()

    try:
        assert make_interpreter({"read_marker": read_marker}).execute("read_marker()") == "visible"
    finally:
        marker.reset(token)


@agent_only
def test_host_tool_within_execution_timeout(make_interpreter: MakeInterpreter) -> None:
    def slow() -> int:
        threading.Event().wait(0.08)
        return 42

    assert make_interpreter({"slow": slow}, cell_timeout=20).execute("slow()") == 42


@agent_only
def test_execution_timeout_does_not_wait_for_blocked_host_tool(
    make_interpreter: MakeInterpreter,
) -> None:
    # Adapted: no wall-clock assertion; the tool would block until the test ends.
    started, release = threading.Event(), threading.Event()

    def blocked() -> int:
        started.set()
        release.wait(100)
        return 42

    interpreter = make_interpreter({"blocked": blocked}, cell_timeout=0.5)
    try:
        with pytest.raises(CodeInterpreterError, match="timeout"):
            interpreter.execute("blocked()")
        assert started.is_set()
        with pytest.raises(CodeInterpreterError, match="session has ended"):
            interpreter.execute("1")
    finally:
        release.set()


def test_interpreter_callbacks(make_interpreter: MakeInterpreter) -> None:
    events: list[tuple[str, Any]] = []

    class RecordingCallback(BaseCallback):
        def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: Any) -> None:
            events.append(("execute_start", inputs["code"]))

        def on_interpreter_execute_end(
            self, call_id: str, outputs: Any, exception: Any = None
        ) -> None:
            events.append(("execute_end", outputs))

        def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: Any) -> None:
            events.append(("tool_start", inputs["tool_name"]))

        def on_interpreter_tool_call_end(
            self, call_id: str, outputs: Any, exception: Any = None
        ) -> None:
            events.append(("tool_end", outputs))

    interpreter = make_interpreter({"answer": lambda: 42})
    interpreter.callbacks = [RecordingCallback()]
    assert interpreter.execute("answer()") == 42
    assert ("execute_start", "answer()") in events
    assert ("tool_start", "answer") in events
    assert ("tool_end", 42) in events
    assert ("execute_end", 42) in events


def test_shutdown_is_terminal_and_idempotent(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    interpreter.start()
    interpreter.start()
    interpreter.shutdown()
    interpreter.shutdown()
    with pytest.raises(CodeInterpreterError, match="shut down"):
        interpreter.start()
    with pytest.raises(CodeInterpreterError, match="shut down"):
        interpreter.execute("1")


@agent_only
def test_execution_leaves_the_host_dspy_module_alone(make_interpreter: MakeInterpreter) -> None:
    host_module = __import__("sys").modules["dspy"]
    make_interpreter().execute("import sys, types\nsys.modules['dspy'] = types.ModuleType('dspy')")
    assert __import__("sys").modules["dspy"] is host_module


class _Actions(dspy.Predict):
    def __init__(self, signature: Any) -> None:
        super().__init__(signature)
        self.actions = iter(
            [
                dspy.Prediction(reasoning="calculate", code="total = add(left=19, right=23)"),
                dspy.Prediction(reasoning="submit", code="SUBMIT(answer=str(total))"),
            ]
        )

    def forward(self, **kwargs: Any) -> Any:
        return next(self.actions)

    async def aforward(self, **kwargs: Any) -> Any:
        return next(self.actions)


def test_rlm_uses_the_factory(env_id: str) -> None:
    calls = []

    def add(*, left: int, right: int) -> int:
        calls.append((left, right))
        return left + right

    factory = rlm_dspy.interpreter_factory(*_named(env_id))
    rlm = dspy.RLM(
        "question: str -> answer: str", max_iters=2, tools=[add], interpreter_factory=factory
    )
    rlm.generate_action = _Actions(rlm.generate_action.signature)
    assert rlm(question="What is 19 + 23?").answer == "42"
    assert calls == [(19, 23)]
    assert factory.execution_instructions in rlm.generate_action.signature.instructions


def test_async_rlm_uses_the_factory_with_async_tool(env_id: str) -> None:
    async def add(*, left: int, right: int) -> int:
        return left + right

    factory = rlm_dspy.interpreter_factory(*_named(env_id))
    rlm = dspy.RLM(
        "question: str -> answer: str", max_iters=2, tools=[add], interpreter_factory=factory
    )
    rlm.generate_action = _Actions(rlm.generate_action.signature)
    assert asyncio.run(rlm.acall(question="What is 19 + 23?")).answer == "42"


def test_flex_uses_the_factory(env_id: str) -> None:
    class Signature(dspy.Signature):
        value: int = dspy.InputField()
        result: int = dspy.OutputField()

    module_src = (
        "class AddModule(dspy.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.solve = dspy.Predict('value: int -> result: int')\n"
        "\n"
        "    def forward(self, **inputs):\n"
        "        predicted = self.solve(value=inputs['value'])\n"
        "        return dspy.Prediction(result=predicted.result)"
    )
    program = dspy.Flex(
        Signature, interpreter_factory=rlm_dspy.interpreter_factory(*_named(env_id))
    )
    program._bind_code(module_src)
    with dspy.context(lm=DummyLM([{"result": 42}])):
        assert program(value=20).result == 42


def _named(env_id: str) -> tuple[str, ...]:
    return ("loopback",) if env_id == "loopback-stdio" else (env_id,)


# -- test_python_interpreter.py ----------------------------------------------------------


def test_execute_simple_code(make_interpreter: MakeInterpreter) -> None:
    # Adapted: printed output loses its trailing newline, as LocalInterpreter's does.
    assert make_interpreter().execute("print('Hello, World!')") == "Hello, World!"


def test_import_and_variables(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("import math\nresult = math.sqrt(4)\nresult") == 2
    assert interpreter.execute("result = number + 1\nresult", variables={"number": 4}) == 5


def test_non_finite_float_variables(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("1 if x == float('inf') else 0", {"x": float("inf")}) == 1
    assert interpreter.execute("1 if x == float('-inf') else 0", {"x": float("-inf")}) == 1
    assert interpreter.execute("import math\n1 if math.isnan(x) else 0", {"x": float("nan")}) == 1


def test_rejects_python_keywords_as_variable_names(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    for keyword in ["for", "class", "import", "def", "return", "if", "while"]:
        with pytest.raises(CodeInterpreterError, match="invalid names"):
            interpreter.execute("print(x)", variables={keyword: 42})


def test_failures(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    with pytest.raises(SyntaxError):
        interpreter.execute("+++")
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
        interpreter.execute("1+0/0")
    token = random.randint(1, 10**9)
    # Adapted: the message is str(exception), as LocalInterpreter reports it.
    with pytest.raises(CodeExecutionError, match=rf"ValueError: {token}"):
        interpreter.execute(f"raise ValueError({token})")


def test_generated_exception_name_cannot_spoof_interpreter_failure(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter()
    with pytest.raises(CodeExecutionError, match="CodeInterpreterError"):
        interpreter.execute(
            "class CodeInterpreterError(Exception):\n    pass\n"
            "raise CodeInterpreterError('generated failure')"
        )
    for name in ("CellTimeout", "Submitted"):
        with pytest.raises(CodeExecutionError, match=name):
            interpreter.execute(f"class {name}(BaseException):\n    pass\nraise {name}('spoof')")
    assert interpreter.execute("2 + 2") == 4


def test_submit_with_list(make_interpreter: MakeInterpreter) -> None:
    token = random.randint(1, 10**9)
    result = make_interpreter()(f"SUBMIT(['The result is', {token}])")
    assert result == FinalOutput({"output": ["The result is", token]})


def test_tools_dict_is_copied(make_interpreter: MakeInterpreter) -> None:
    tools = {"my_tool": lambda: "result"}
    interpreter = make_interpreter(tools)
    tools["new_tool"] = lambda: "new"
    assert "new_tool" not in interpreter.tools


def test_serialize_variables(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    assert interpreter.execute("x", variables={"x": (1, 2, 3)}) == [1, 2, 3]
    assert interpreter.execute("sorted(x)", variables={"x": {3, 1, 2}}) == [1, 2, 3]
    assert set(interpreter.execute("x", variables={"x": {1, "a"}})) == {1, "a"}
    hit = _Hit(document_id=7, title="abc")
    assert interpreter.execute("hit['document_id']", variables={"hit": hit}) == 7
    nested = {"hit": _Hit(document_id=11, title="nested")}
    code = "(data['hit']['document_id'], data['hit']['title'])"
    assert interpreter.execute(code, variables={"data": nested}) == [11, "nested"]
    hits = [_Hit(document_id=1, title="a"), _Hit(document_id=2, title="b")]
    assert interpreter.execute("sum(h['document_id'] for h in hits)", {"hits": hits}) == 3
    value = {"data": {"set": {1, 2}, "tuple": (3, 4), "nested": [{5, 6}]}}
    result = interpreter.execute("data", variables=value)
    assert result == {"set": [1, 2], "tuple": [3, 4], "nested": [[5, 6]]}


def test_unserializable_pydantic_variable_raises_code_interpreter_error(
    make_interpreter: MakeInterpreter,
) -> None:
    interpreter = make_interpreter()
    value = _UnserializableModel(value=_UnserializableValue())
    with pytest.raises(CodeInterpreterError, match="_UnserializableModel") as caught:
        interpreter.execute("value", variables={"value": value})
    assert type(caught.value) is CodeInterpreterError
    assert not interpreter.started


def test_tool_arguments(make_interpreter: MakeInterpreter) -> None:
    def search(query: str, limit: int = 10) -> str:
        return f"query={query}, limit={limit}"

    def add(a: int, b: int, c: int) -> str:
        return f"{a + b + c}"

    def greet(name: str, greeting: str = "Hello") -> str:
        return f"{greeting}, {name}!"

    interpreter = make_interpreter({"search": search, "add": add, "greet": greet})
    assert interpreter.execute('search(query="test", limit=5)') == "query=test, limit=5"
    assert interpreter.execute('search("hello")') == "query=hello, limit=10"
    assert interpreter.execute("add(1, 2, 3)") == "6"
    assert interpreter.execute("add(10, 20, c=30)") == "60"
    assert interpreter.execute('greet("World")') == "Hello, World!"
    assert interpreter.execute('greet("World", "Hi")') == "Hi, World!"


def test_tool_errors_surface_as_runtime_error(make_interpreter: MakeInterpreter) -> None:
    def failing_tool(x: int) -> str:
        raise ValueError(f"bad value: {x}")

    async def failing_async(x: int) -> str:
        await asyncio.sleep(0)
        raise ValueError(f"boom:{x}")

    interpreter = make_interpreter({"failing_tool": failing_tool, "failing_async": failing_async})
    for call, text in (("failing_tool(42)", "bad value: 42"), ("failing_async(7)", "boom:7")):
        result = interpreter.execute(
            f"try:\n    {call}\n    output = 'no error'\n"
            "except RuntimeError as e:\n    output = str(e)\noutput"
        )
        assert "ValueError" in result and text in result


def test_tool_return_types(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter(
        {
            "count": lambda: 4,
            "score": lambda: 0.95,
            "valid": lambda: True,
            "nothing": lambda: None,
            "pages": lambda: [1, 2, 3],
            "info": lambda: {"count": 4, "label": "pages"},
        }
    )
    assert interpreter.execute("[type(count()).__name__, count() + 1]") == ["int", 5]
    assert interpreter.execute("[type(score()).__name__, score() * 2]") == ["float", 1.9]
    assert interpreter.execute("[type(valid()).__name__, valid() and 'yes']") == ["bool", "yes"]
    # Adapted: None stays None (Pyodide's bridge turns it into '').
    assert interpreter.execute("repr(nothing())") == "None"
    assert interpreter.execute("[type(pages()).__name__, pages()[0] + 10]") == ["list", 11]
    assert interpreter.execute("[type(info()).__name__, info()['count'] + 1]") == ["dict", 5]


def test_tool_results_that_are_not_json_are_errors(make_interpreter: MakeInterpreter) -> None:
    # Adapted: DSPy's PythonInterpreter str()-s such values; here they are refused clearly.
    class Custom:
        def __str__(self) -> str:
            return "custom-object"

    @dataclasses.dataclass
    class _Holder:
        name: str
        lock: Any

    interpreter = make_interpreter(
        {
            "custom": Custom,
            "nan": lambda: float("nan"),
            "holder": lambda: _Holder(name="test", lock=threading.Lock()),
        }
    )
    for call in ("custom()", "nan()", "holder()"):
        with pytest.raises(CodeExecutionError, match="is not JSON-compatible"):
            interpreter.execute(call)


def test_structured_tool_results_become_json(make_interpreter: MakeInterpreter) -> None:
    hit = _TimestampedHit(
        document_id=42, title="example", created_at=datetime(2026, 5, 14, 8, 7, 27)
    )
    table = _PageTable(index=0, bbox=_BBox(x0=1.0, top=2.0, x1=3.0, bottom=4.0), strategy="lines")
    interpreter = make_interpreter(
        {
            "search": lambda: hit,
            "search_many": lambda: [_Hit(document_id=1, title="a"), _Hit(document_id=2, title="b")],
            "bad_model": lambda: _UnserializableModel(value=_UnserializableValue()),
            "table": lambda: table,
            "tables": lambda: [table, dataclasses.replace(table, index=1)],
            "typed_point": lambda: _TypedPoint(x=10.5, y=20.3, label="origin"),
            "point": lambda: _Point(x=3.0, y=4.0),
        }
    )
    code = "r = search()\n(r['document_id'], r['title'], r['created_at'])"
    assert interpreter.execute(code) == [42, "example", "2026-05-14T08:07:27"]
    assert interpreter.execute("sum(h['document_id'] for h in search_many())") == 3
    with pytest.raises(CodeExecutionError, match="_UnserializableModel"):
        interpreter.execute("bad_model()")
    assert interpreter.execute("t = table()\n(t['bbox']['x0'], t['strategy'])") == [1.0, "lines"]
    assert interpreter.execute("[t['index'] for t in tables()]") == [0, 1]
    assert interpreter.execute("p = typed_point()\n(p['x'], p['label'])") == [10.5, "origin"]
    assert interpreter.execute("p = point()\np['x'] + p['y']") == 7.0


def test_submit_signatures(make_interpreter: MakeInterpreter) -> None:
    fields = [{"name": "answer", "type": "str"}, {"name": "confidence", "type": "float"}]
    interpreter = make_interpreter(output_fields=fields)
    expected = FinalOutput({"answer": "the answer", "confidence": 0.95})
    assert interpreter.execute('SUBMIT(answer="the answer", confidence=0.95)') == expected
    assert interpreter.execute('SUBMIT("the answer", 0.95)') == expected
    assert interpreter.execute('a = "the answer"\nc = 0.95\nSUBMIT(a, c)') == expected
    with pytest.raises(CodeInterpreterError) as caught:
        interpreter.execute("x = 1; SUBMIT(x)")
    assert "missing 1 required positional argument" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "code", "expected"),
    [
        ({"name": "nothing", "type": "NoneType"}, "SUBMIT(nothing=None)", {"nothing": None}),
        ({"name": "FinalOutput", "type": "str"}, "SUBMIT(FinalOutput='ok')", {"FinalOutput": "ok"}),
    ],
)
def test_submit_valid_runtime_edge_cases(
    make_interpreter: MakeInterpreter, field: dict[str, str], code: str, expected: Any
) -> None:
    assert make_interpreter(output_fields=[field]).execute(code) == FinalOutput(expected)


def test_large_variables(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    large = "".join(random.choice("abcdefghij") for _ in range(1000)) * 20_000  # 20 MB
    code = "(len(data), data[:1000] == data[-1000:], small)"
    assert interpreter.execute(code, {"data": large, "small": 1}) == [len(large), True, 1]
    listed = list(range(300_000))
    assert interpreter.execute("(len(x), x[-1])", {"x": listed}) == [300_000, 299_999]


def test_base_exceptions_are_recoverable(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    with pytest.raises(CodeExecutionError, match="SystemExit"):
        interpreter.execute("import sys\nsys.exit(3)")
    with pytest.raises(CodeExecutionError, match="KeyboardInterrupt"):
        interpreter.execute("raise KeyboardInterrupt('stop')")
    with pytest.raises(CodeExecutionError, match="Custom"):
        interpreter.execute("class Custom(BaseException):\n    pass\nraise Custom('x')")
    assert interpreter.execute("40 + 2") == 42


@agent_only
def test_process_death_ends_stateful_session(make_interpreter: MakeInterpreter) -> None:
    interpreter = make_interpreter()
    pid = interpreter.execute("import os\nsession_value = 41\nos.getpid()")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(CodeInterpreterError, match="state was lost") as caught:
        interpreter.execute("session_value + 1")
    assert type(caught.value) is CodeInterpreterError
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interpreter.start()
