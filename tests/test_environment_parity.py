"""The same end-to-end behaviour in every built-in environment."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from scripts import Script, finish, repl

from rlm_core import RLM, RLMLogger

ENVIRONMENTS = ["local", "subprocess"]

Messages = list[dict[str, Any]]

pytestmark = pytest.mark.timeout(120)


def make_rlm(environment: str, script: Any, **kwargs: Any) -> RLM:
    return RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        environment=environment,
        **kwargs,
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_answer_through_the_repl_with_subcalls(environment: str) -> None:
    script = Script(
        [
            repl("words = context.split()\nprint(len(words))"),
            repl(
                "one = llm_query('first')\nmany = llm_query_batched(['a', 'b'])\n"
                "answer['content'] = f'{len(words)}|{one}|{many}'\nanswer['ready'] = True"
            ),
        ],
        sub=lambda p: p.upper(),
    )
    logger = RLMLogger()
    result = make_rlm(environment, script, logger=logger).completion("x y z")
    assert result.response == "3|FIRST|['A', 'B']"
    usage = result.usage_summary.model_usage_summaries["scripted"]
    assert usage.total_calls == 2 + 3
    assert result.metadata is not None
    calls = result.metadata["iterations"][1]["code_blocks"][0]["result"]["rlm_calls"]
    assert sorted(c["response"] for c in calls) == ["A", "B", "FIRST"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_rlm_query_recursion(environment: str) -> None:
    def root(messages: Messages) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if messages[1]["content"].startswith("Your context is a str of 5 total"):  # child
            return repl(
                "answer['content'] = 'child:' + context + ':' + llm_query('deep')\n"
                "answer['ready'] = True"
            )
        if turn == 0:
            return repl("rs = rlm_query_batched(['kid-1', 'kid-2'])\nprint(rs)")
        return repl("answer['content'] = ' & '.join(rs)\nanswer['ready'] = True")

    script = Script(root, sub=lambda p: p.upper())
    result = make_rlm(environment, script, max_depth=2).completion("parent context")
    assert result.response == "child:kid-1:DEEP & child:kid-2:DEEP"
    # parent: 2 root calls; each child: 1 root call + 1 sub-call.
    assert result.usage_summary.model_usage_summaries["scripted"].total_calls == 2 + 2 * 2


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_persistent_sessions(environment: str) -> None:
    replies = iter(
        [
            repl("notes = context.upper()\nanswer['content'] = notes\nanswer['ready'] = True"),
            repl(
                "answer['content'] = f'{notes}/{context_1}/{history_0[1][\"role\"]}'\n"
                "answer['ready'] = True"
            ),
        ]
    )
    script = Script(lambda m: next(replies))
    with make_rlm(environment, script, persistent=True) as rlm:
        assert rlm.completion("first").response == "FIRST"
        assert rlm.completion("second").response == "FIRST/second/user"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_errors_tracebacks_and_exit(environment: str) -> None:
    seen: list[str] = []

    def root(messages: Messages) -> str:
        seen.extend(m["content"] for m in messages if m["role"] == "user")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        return [
            repl("def f():\n    return 1 / 0\nf()"),
            repl("import sys\nprint('bye')\nsys.exit(4)"),
            repl("print('z' * 50_000)"),
            finish("survived"),
        ][turn]

    result = make_rlm(environment, Script(root)).completion("c")
    assert result.response == "survived"
    text = "\n".join(seen)
    assert "ZeroDivisionError: division by zero" in text and "return 1 / 0" in text
    assert "SystemExit: 4" in text and "bye" in text
    assert "... + [" in text and " chars...]" in text


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_compaction(environment: str) -> None:
    def root(messages: Messages) -> str:
        if messages[-1]["content"].startswith("Summarize your progress"):
            return "SUMMARY"
        if "compacted 1 time" in str(messages):
            return repl(
                "answer['content'] = f'{len(history)}:{history[-1][\"content\"]}'\n"
                "answer['ready'] = True"
            )
        return repl("print('w' * 4000)")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root), "context_window": 3_000},
        environment=environment,
        compaction=True,
    )
    count, summary = rlm.completion("c").response.split(":")
    assert summary == "SUMMARY" and int(count) >= 2


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_custom_tools(environment: str) -> None:
    def lookup(city: str) -> int:
        if city == "nowhere":
            raise ValueError("unknown city")
        return {"Oslo": 700}[city]

    code = (
        "try:\n    lookup('nowhere')\nexcept Exception as e:\n    err = str(e)\n"
        "answer['content'] = f'{lookup(\"Oslo\") * FACTOR}|{\"unknown city\" in err}|{triple(2)}'\n"
        "answer['ready'] = True"
    )
    rlm = make_rlm(
        environment,
        Script([repl(code)]),
        custom_tools={
            "lookup": lookup,
            "FACTOR": 2,
            "triple": {"tool": {"source": "def triple(x):\n    return 3 * x"}, "description": "x3"},
        },
    )
    assert rlm.completion("c").response == "1400|True|6"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_source_tool_that_fails_is_a_clear_error(environment: str) -> None:
    rlm = make_rlm(environment, Script([finish("x")]), custom_tools={"f": {"source": "1/0"}})
    with pytest.raises(Exception, match="custom tool 'f': its source failed: ZeroDivisionError"):
        rlm.completion("c")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_dict_and_list_contexts(environment: str) -> None:
    code = repl(
        "answer['content'] = f'{type(context).__name__}:{sorted(context) if isinstance(context, dict) else context[1]}'\n"
        "answer['ready'] = True"
    )
    assert make_rlm(environment, Script([code])).completion({"b": 1, "a": [2]}).response == (
        "dict:['a', 'b']"
    )
    assert make_rlm(environment, Script([code])).completion(["p", "q"]).response == "list:q"


def test_64_concurrent_batched_calls_are_in_flight_at_once() -> None:
    """One cell issues 64 llm_query_batched prompts; the scripted LM counts how many are
    being answered at the same moment (counted, not timed)."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    enough = threading.Event()

    def sub(prompt: str) -> str:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            if state["now"] >= 32:
                enough.set()
        enough.wait(timeout=20)  # hold each call until 32 overlap (or give up)
        with lock:
            state["now"] -= 1
        return prompt[::-1]

    code = (
        "rs = llm_query_batched([f'p{i:02d}' for i in range(64)])\n"
        "answer['content'] = ','.join(rs[:3]) + f'|{len(rs)}'\nanswer['ready'] = True"
    )
    rlm = make_rlm("subprocess", Script([repl(code)], sub=sub), max_concurrent_subcalls=64)
    result = rlm.completion("c")
    assert result.response == "00p,10p,20p|64"
    assert state["peak"] >= 32
    assert result.usage_summary.model_usage_summaries["scripted"].total_calls == 65
