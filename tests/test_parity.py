"""What a user switching from ``rlms`` 0.1.3 sees: variable values in ``locals``, the texts
the root LM reads, and the differences kept on purpose.

The expected texts and values come from ``rlms`` 0.1.3 itself: ``tests/fixtures/rlms_0_1_3/``
holds what its ``make_texts.py`` and ``make_log.py`` recorded (see the README there).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripts import EchoHandler, Script, finish, repl

from rlm_core import RLM, RLMLogger
from rlm_core._proto.rlm.v1 import agent_pb2 as pb
from rlm_core.agent import server as agent_server
from rlm_core.environments.base import Environment, Session, parse_tools
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.exceptions import BudgetExceededError, ErrorThresholdExceededError
from rlm_core.exceptions import TimeoutExceededError as Timeout
from rlm_core.parsing import format_execution_result, format_iteration
from rlm_core.rlm import _refusal
from rlm_core.types import (
    MAX_LOCAL_CHARS,
    CappedLocal,
    CodeBlock,
    LocalText,
    REPLResult,
    RLMIteration,
    describe_local,
    locals_from_wire,
    locals_to_wire,
)

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rlms_0_1_3"
RLMS = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
ENVIRONMENTS = ["local", "subprocess"]


def started(kind: str, **kwargs: Any) -> Environment:
    env: Environment = LocalEnvironment() if kind == "local" else SubprocessEnvironment(**kwargs)
    env.start(Session(subcalls=EchoHandler()))
    return env


@pytest.fixture(params=ENVIRONMENTS)
def env(request: pytest.FixtureRequest) -> Iterator[Environment]:
    e = started(request.param, cell_timeout=60)
    yield e
    e.close()


# -- locals: values as rlms logs them ---------------------------------------------------------


def test_locals_hold_the_values_rlms_writes_in_the_same_order(env: Environment) -> None:
    result = env.execute(RLMS["cell"])
    assert result.error is None, result.stderr
    logged = result.to_dict()["locals"]
    assert logged == RLMS["locals"]
    assert list(logged) == list(RLMS["locals"])
    assert result.locals == RLMS["locals"]  # in memory too
    assert type(result.locals["json"]) is LocalText
    assert type(result.locals["name"]) is str


def test_the_root_lm_is_shown_the_variables_rlms_shows(env: Environment) -> None:
    result = env.execute(RLMS["cell"])
    assert format_execution_result(result) == RLMS["execution_result"]


def test_private_names_repl_functions_and_function_tools_are_left_out() -> None:
    env = LocalEnvironment()
    tools = parse_tools({"RATE": 7, "lookup": lambda key: key})
    env.start(Session(subcalls=EchoHandler(), custom_tools=tools))
    try:
        result = env.execute("_hidden = 1\nshown = 2")
    finally:
        env.close()
    assert list(result.locals) == ["answer", "RATE", "shown"]
    assert "REPL variables: ['answer', 'RATE', 'shown']" in format_execution_result(result)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_locals_carry_values_through_a_run_and_its_log(environment: str) -> None:
    code = "n = len(context)\nwords = context.split()\nimport re"
    logger = RLMLogger()
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": Script([repl(code), finish("done")])},
        environment=environment,
        logger=logger,
    ) as rlm:
        result = rlm.completion("a b c")
    assert result.metadata is not None
    (block,) = result.metadata["iterations"][0]["code_blocks"]
    assert block["result"]["locals"] == {
        "answer": {"content": "", "ready": False},
        "context_0": "a b c",
        "context": "a b c",
        "n": 5,
        "words": ["a", "b", "c"],
        "re": "<module 're'>",
    }
    shown = result.metadata["iterations"][1]["prompt"][-2]["content"]
    assert "REPL variables: ['answer', 'context_0', 'context', 'n', 'words']" in shown


def test_a_run_logs_the_locals_rlms_0_1_3_logged_for_the_same_script() -> None:
    """The run of ``make_log.py`` again, with rlm-core: each cell's ``locals`` are those of
    the ``rlms`` log, and the conversation up to the failing cell is the same text."""
    names = _fixture_constants()
    theirs = [json.loads(line) for line in (FIXTURES / "trajectory.jsonl").open()]
    logger = RLMLogger()
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": _fixture_lm(names), "model_name": "standin-model"},
        max_depth=2,
        max_iterations=6,
        logger=logger,
    ) as rlm:
        result = rlm.completion(
            names["CONTEXT"], root_prompt=names["MARKER"] + ": which station logged storms?"
        )
    assert result.response == "Ardmore"
    assert result.metadata is not None
    ours = result.metadata["iterations"]
    assert len(ours) == len(theirs) - 1
    for mine, their in zip(_blocks(ours), _blocks(theirs[1:]), strict=True):
        expected = dict(their["locals"])
        expected.pop("f")  # the file handle rlms leaves in the namespace when loading a context
        if not their["last"]:  # rlms logs the answer dict as the whole turn left it
            expected.pop("answer")
            mine["locals"].pop("answer")
        assert mine["locals"] == expected
    assert ours[2]["prompt"] == theirs[3]["prompt"]  # two turns of REPL output, as rlms shows


def _fixture_constants() -> dict[str, Any]:
    tree = ast.parse((FIXTURES / "make_log.py").read_text(encoding="utf-8"))
    wanted = {"MARKER", "CONTEXT", "ROOT_CELLS", "CHILD_CELLS"}
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in wanted
    }


def _fixture_lm(names: dict[str, Any]) -> Any:
    """The stand-in LM of ``make_log.py``: the same replies to the same messages."""

    def block(code: str) -> str:
        return f"Next step.\n```repl\n{code}```"

    def reply(messages: list[dict[str, Any]]) -> str:
        if messages[0].get("role") != "system":
            return "Ardmore (sub-LM reply to: " + str(messages[-1]["content"])[:30] + ")"
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        top = names["MARKER"] in str(messages[1].get("content", ""))[:200]
        if top and turn == 2:
            return block(names["ROOT_CELLS"][2]) + "\n" + block(names["ROOT_CELLS"][3])
        cells = names["ROOT_CELLS"][:2] if top else names["CHILD_CELLS"]
        return str(block(cells[min(turn, len(cells) - 1)]))

    return reply


def _blocks(iterations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cell result of a trajectory and of the children in it, in order, with whether
    it was the last cell of its turn."""
    out: list[dict[str, Any]] = []
    for iteration in iterations:
        blocks = iteration["code_blocks"]
        for i, block in enumerate(blocks):
            out.append({"locals": dict(block["result"]["locals"]), "last": i == len(blocks) - 1})
            for call in block["result"]["rlm_calls"]:
                if isinstance(call.get("metadata"), dict):
                    out.extend(_blocks(call["metadata"]["iterations"]))
    return out


# -- locals: capped, cheap and safe ---------------------------------------------------------


def test_a_long_value_is_a_prefix_with_its_length_and_type(env: Environment) -> None:
    result = env.execute(
        "big = 'x' * 3_000_000 + 'END'\nrows = list(range(100_000))\nblob = bytes(5_000_000)"
    )
    assert result.error is None, result.stderr
    big, rows, blob = (result.locals[name] for name in ("big", "rows", "blob"))
    assert big == {"capped": True, "type": "str", "length": 3_000_003, "prefix": "x" * 2_000}
    assert (rows["type"], rows["length"], len(rows["prefix"])) == ("list", 100_000, 2_000)
    assert rows["prefix"].startswith("[0, 1, 2, 3")
    assert (blob["type"], blob["length"]) == ("bytes", 5_000_000)
    assert blob["prefix"].startswith("b'\\x00\\x00")
    assert all(type(v) is CappedLocal for v in (big, rows, blob))
    assert "REPL variables: ['answer', 'big', 'rows']" in format_execution_result(result)
    assert len(json.dumps(result.to_dict())) < 4 * MAX_LOCAL_CHARS


@pytest.mark.parametrize(
    "value",
    [
        "0123456789abcdef" * (640 * 1024),
        b"\x00" * (10 * 1024 * 1024),
        bytearray(10 * 1024 * 1024),
        list(range(1_000_000)),
        {str(i): "v" * 100 for i in range(100_000)},
        {"k" * 5_000_000: 1},
        set(range(200_000)),
        ("x" * 5_000_000,),
    ],
    ids=["str", "bytes", "bytearray", "list", "dict", "long key", "set", "tuple"],
)
def test_describing_a_huge_value_reads_only_its_start(value: Any) -> None:
    tracemalloc.start()
    try:
        local = describe_local(value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(local) is CappedLocal and len(local["prefix"]) == MAX_LOCAL_CHARS
    assert peak < 256 * 1024, f"describing it allocated {peak:,} bytes"


def test_a_string_subclass_is_described_without_running_its_methods() -> None:
    class Sly(str):
        def __repr__(self) -> str:
            raise AssertionError("repr")

        def __str__(self) -> str:
            raise AssertionError("str")

        def __len__(self) -> int:
            raise AssertionError("len")

        def __getitem__(self, index: Any) -> str:
            raise AssertionError("getitem")

    assert type(describe_local(Sly("abc"))) is str and describe_local(Sly("abc")) == "abc"
    capped = describe_local(Sly("y" * 5_000))
    assert capped == {"capped": True, "type": "Sly", "length": 5_000, "prefix": "y" * 2_000}


HOSTILE = """\
class Raises:
    def __repr__(self):
        raise RuntimeError('no repr')
class Huge:
    def __repr__(self):
        return 'h' * 20_000_000
class Nameless:
    @property
    def __name__(self):
        raise RuntimeError('no name')
    def __call__(self):
        return 1
    def __repr__(self):
        return 'Nameless()'
class Key:
    def __str__(self):
        raise RuntimeError('no str')
    def __hash__(self):
        return 1
class Rows(list):
    def __iter__(self):
        raise RuntimeError('no iter')
    def __len__(self):
        raise RuntimeError('no len')
raises, huge, nameless = Raises(), Huge(), Nameless()
keyed = {Key(): 'v'}
rows = Rows([1, 2])
loop = [1]
loop.append(loop)
"""


def test_hostile_values_are_caught_and_capped(env: Environment) -> None:
    result = env.execute(HOSTILE)
    assert result.error is None, result.stderr
    values = result.locals
    assert values["raises"] == "<Raises>"
    assert values["huge"] == {
        "capped": True,
        "type": "Huge",
        "length": 20_000_000,
        "prefix": "h" * 2_000,
    }
    assert values["nameless"] == "<Nameless 'Nameless()'>"
    assert values["keyed"] == {"<Key>": "v"}
    assert values["rows"] == [1, 2]
    assert values["loop"] == [1, "[...]"]
    assert env.execute("print('next')").stdout == "next\n"


REBINDS = """\
import builtins, sys
class Sneaky:
    def __repr__(self):
        builtins.print = None
        sys.stdout = None
        globals()['llm_query'] = None
        return 'Sneaky()'
sneaky = Sneaky()
"""


def test_what_a_repr_rebinds_is_undone_like_what_a_cell_rebinds(env: Environment) -> None:
    assert env.execute(REBINDS).locals["sneaky"] == "Sneaky()"
    result = env.execute("print(len('abc'), llm_query('q'))")
    assert result.error is None, result.stderr
    assert result.stdout == "3 llm:q\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses signals")
def test_a_repr_that_hangs_is_interrupted_by_the_cell_timeout() -> None:
    env = started("subprocess", cell_timeout=1)
    try:
        result = env.execute(
            "class Hangs:\n    def __repr__(self):\n        while True: pass\nh = Hangs()"
        )
        assert result.error is None, result.stderr
        assert result.locals["h"] == "<Hangs>"
        assert env.execute("x = 1").locals["x"] == 1
    finally:
        env.close()


def test_locals_too_large_for_a_message_are_left_out_not_the_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_server, "MAX_MESSAGE_BYTES", 40_000)
    servicer = agent_server.AgentServicer(lambda why: None, heartbeat_timeout=30.0)
    code = "for i in range(30):\n    globals()[f'v{i}'] = str(i) * 2_000\nprint('done')"
    stop, replies = threading.Event(), []

    def execute() -> None:
        replies.append(servicer.Execute(pb.ExecuteRequest(code=code), None))
        stop.set()

    caller = threading.Thread(target=execute)
    caller.start()
    servicer.run_cells_forever(stop)
    caller.join()
    (reply,) = replies
    assert (reply.stdout, reply.error, dict(reply.locals)) == ("done\n", "", {})


def test_locals_cross_the_wire_with_their_order_and_kind() -> None:
    import json as module

    values = {
        "zeta": 1,
        "alpha": LocalText("<module 'json'>"),
        "text": "<module 'json'>",
        "big": describe_local("q" * 10_000),
        "nan": None,
        **{f"v{i}": i for i in range(40)},
    }
    wire = locals_to_wire(values)
    assert all(isinstance(v, str) and v.isascii() for v in wire.values())
    back = locals_from_wire(dict(reversed(wire.items())))
    assert list(back) == list(values) and back == values
    assert type(back["alpha"]) is LocalText and type(back["text"]) is str
    assert type(back["big"]) is CappedLocal
    assert locals_from_wire({"old": "int"}) == {"old": "int"}  # an agent sending type names
    assert locals_to_wire({"m": module})["m"] == json.dumps([0, "text", "<module 'json'>"])


def test_a_result_with_live_objects_is_logged_as_rlms_logs_it() -> None:
    import json as module

    result = REPLResult(locals={"m": module, "n": (1, 2), "s": "z" * 3_000})
    logged = result.to_dict()["locals"]
    assert logged["m"] == "<module 'json'>" and logged["n"] == [1, 2]
    assert logged["s"]["length"] == 3_000 and type(logged["s"]) is dict


def test_format_execution_result_lists_values_of_simple_types_only() -> None:
    result = REPLResult(
        stdout="hi\n",
        locals={
            "answer": {"content": "", "ready": False},
            "_private": 1,
            "n": 3,
            "nothing": None,
            "mod": LocalText("<module 're'>"),
            "word": "<module 're'>",
            "long": describe_local("w" * 10_000),
            "raw": describe_local(b"\x00" * 10_000),
        },
    )
    assert format_execution_result(result) == (
        "\nhi\n\n\nREPL variables: ['answer', 'n', 'word', 'long']\n"
    )


# -- texts the root LM and the user read -----------------------------------------------------


def test_str_of_a_result_reads_like_rlms() -> None:
    result = REPLResult(stdout="out\n", stderr="warn\n", locals={"x": 1}, execution_time=0.5)
    assert str(result) == RLMS["repl_result_str"]


def test_a_long_cell_output_is_cut_as_rlms_cuts_it() -> None:
    block = CodeBlock("c", REPLResult(stdout="z" * 25_000))
    (_, feedback) = format_iteration(RLMIteration(prompt=[], response="r", code_blocks=[block]))
    assert feedback["content"] == RLMS["truncated_output"]


def test_every_reserved_tool_name_is_named_as_rlms_names_them() -> None:
    tools = {"context": 1, "answer": 2, "fine": 3}
    with pytest.raises(ValueError) as info:
        parse_tools(tools)
    assert str(info.value) == RLMS["tool_conflict"]
    with pytest.raises(ValueError, match=re.escape(RLMS["tool_conflict"])):
        RLM(backend="scripted", backend_kwargs={"responses": ["x"]}, custom_tools=tools)


def test_refused_subcalls_say_what_rlms_says() -> None:
    assert "Error: " + _refusal(Timeout(5.0, 1.0)) == RLMS["timeout_refusal"]
    assert "Error: " + _refusal(BudgetExceededError(2.0, 1.0)) == RLMS["budget_refusal"]


def test_a_subcall_after_the_deadline_is_refused_with_the_timeout_text() -> None:
    code = "import time\ntime.sleep(0.6)\nanswer['content'] = llm_query('late')\nanswer['ready'] = True"
    script = Script([repl(code)], sub=lambda p: "answered")
    result = RLM(
        backend="scripted", backend_kwargs={"responses": script}, max_timeout=0.5
    ).completion("c")
    assert re.fullmatch(r"Error: Timeout exhausted \(\d+\.\ds of 0\.5s\)", result.response)
    assert script.sub_calls == []


def test_a_subcall_after_the_budget_is_spent_is_refused_with_the_budget_text() -> None:
    code = "answer['content'] = llm_query('more')\nanswer['ready'] = True"
    script = Script([repl(code)], sub=lambda p: "answered")
    result = RLM(
        backend="scripted",
        backend_kwargs={"responses": script, "cost_per_token": 0.001},
        max_budget=0.01,
    ).completion("c")
    assert re.fullmatch(
        r"Error: Budget exhausted \(spent \$\d+\.\d{6} of \$0\.010000\)", result.response
    )
    assert script.sub_calls == []


def test_a_subcall_after_the_tokens_are_spent_is_refused_with_a_like_text() -> None:
    code = "answer['content'] = llm_query('more')\nanswer['ready'] = True"
    script = Script([repl(code)], sub=lambda p: "answered")
    result = RLM(
        backend="scripted", backend_kwargs={"responses": script}, max_tokens=100
    ).completion("c")
    assert re.fullmatch(r"Error: Token limit exhausted \([\d,]+ of 100 tokens\)", result.response)


def test_a_child_over_budget_is_reported_with_the_rlms_text() -> None:
    def root(messages: list[dict[str, Any]]) -> str:
        if "Your context is a str of 4 total" in messages[1]["content"]:  # the child
            return repl("print('child')")
        return repl("answer['content'] = rlm_query('kid!')\nanswer['ready'] = True")

    result = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root), "cost_per_token": 0.00001},
        max_depth=2,
        max_budget=0.05,
    ).completion("c")
    assert result.response.startswith("Error: Child RLM budget exceeded - Budget exceeded: ")


# -- differences kept on purpose -------------------------------------------------------------


WARNS = "import sys, warnings\nprint('progress 50%', file=sys.stderr)\nwarnings.warn('deprecated')"


@pytest.mark.filterwarnings("ignore:deprecated")
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_cells_that_only_write_to_stderr_do_not_count_toward_max_errors(
    environment: str,
) -> None:
    script = Script([repl(WARNS), repl(WARNS), finish("done")])
    result = RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        environment=environment,
        max_errors=1,
        logger=RLMLogger(),
    ).completion("c")
    assert result.response == "done"
    assert result.metadata is not None
    warned = [it["code_blocks"][0]["result"] for it in result.metadata["iterations"][:2]]
    assert all("progress 50%" in r["stderr"] and r["error"] is None for r in warned)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_cell_that_raises_counts_toward_max_errors(environment: str) -> None:
    script = Script([repl("print('x', file=__import__('sys').stderr)\n1 / 0"), finish("never")])
    with pytest.raises(ErrorThresholdExceededError) as info:
        RLM(
            backend="scripted",
            backend_kwargs={"responses": script},
            environment=environment,
            max_errors=1,
        ).completion("c")
    assert info.value.error_count == 1 and "ZeroDivisionError" in (info.value.last_error or "")
