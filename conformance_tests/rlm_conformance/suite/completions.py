"""RUN: whole RLM completions on the scripted LM, end to end through the environment."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rlm_conformance.cases import case
from rlm_conformance.doubles import Script, finish, repl
from rlm_conformance.fixtures import MakeRLM
from rlm_core import RLMLogger
from rlm_core.environments.base import COMPACTION, PERSISTENT, RECURSIVE, SUBCALLS

Messages = list[dict[str, Any]]


class CompletionTests:
    """``RLM.completion`` with the scripted LM over the environment's carrier."""

    @case("RUN-001", "a completion with llm_query and llm_query_batched", requires=[SUBCALLS])
    def test_subcalls(self, make_rlm: MakeRLM) -> None:
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
        result = make_rlm(script, logger=RLMLogger()).completion("x y z")
        assert result.response == "3|FIRST|['A', 'B']"
        assert result.usage_summary.model_usage_summaries["scripted"].total_calls == 2 + 3
        assert result.metadata is not None
        calls = result.metadata["iterations"][1]["code_blocks"][0]["result"]["rlm_calls"]
        assert sorted(c["response"] for c in calls) == ["A", "B", "FIRST"]

    @case("RUN-002", "rlm_query_batched runs child RLMs to depth 2", requires=[RECURSIVE])
    def test_recursion(self, make_rlm: MakeRLM) -> None:
        def root(messages: Messages) -> str:
            turn = sum(1 for m in messages if m["role"] == "assistant")
            if messages[1]["content"].startswith("Your context is a str of 5 total"):
                return repl(
                    "answer['content'] = 'child:' + context + ':' + llm_query('deep')\n"
                    "answer['ready'] = True"
                )
            if turn == 0:
                return repl("rs = rlm_query_batched(['kid-1', 'kid-2'])\nprint(rs)")
            return repl("answer['content'] = ' & '.join(rs)\nanswer['ready'] = True")

        script = Script(root, sub=lambda p: p.upper())
        result = make_rlm(script, max_depth=2).completion("parent context")
        assert result.response == "child:kid-1:DEEP & child:kid-2:DEEP"
        assert result.usage_summary.model_usage_summaries["scripted"].total_calls == 2 + 2 * 2

    @case("RUN-003", "persistent=True keeps state across completions", requires=[PERSISTENT])
    def test_persistent(self, make_rlm: MakeRLM) -> None:
        replies = iter(
            [
                repl("notes = context.upper()\nanswer['content'] = notes\nanswer['ready'] = True"),
                repl(
                    "answer['content'] = f'{notes}/{context_1}/{history_0[1][\"role\"]}'\n"
                    "answer['ready'] = True"
                ),
            ]
        )
        with make_rlm(Script(lambda m: next(replies)), persistent=True) as rlm:
            assert rlm.completion("first").response == "FIRST"
            assert rlm.completion("second").response == "FIRST/second/user"

    @case("RUN-004", "errors, sys.exit and huge output reach the root LM; the run goes on")
    def test_errors_reach_the_lm(self, make_rlm: MakeRLM) -> None:
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

        result = make_rlm(Script(root)).completion("c")
        assert result.response == "survived"
        text = "\n".join(seen)
        assert "ZeroDivisionError: division by zero" in text and "return 1 / 0" in text
        assert "SystemExit: 4" in text and "bye" in text
        assert "... + [" in text and " chars...]" in text

    @case("RUN-005", "compaction replaces the history between iterations", requires=[COMPACTION])
    def test_compaction(self, make_rlm: MakeRLM) -> None:
        def root(messages: Messages) -> str:
            if messages[-1]["content"].startswith("Summarize your progress"):
                return "SUMMARY"
            if "compacted 1 time" in str(messages):
                return repl(
                    "answer['content'] = f'{len(history)}:{history[-1][\"content\"]}'\n"
                    "answer['ready'] = True"
                )
            return repl("print('w' * 4000)")

        rlm = make_rlm(Script(root), backend_kwargs={"context_window": 3_000}, compaction=True)
        count, summary = rlm.completion("c").response.split(":")
        assert summary == "SUMMARY" and int(count) >= 2

    @case("RUN-006", "custom tools of all three kinds in a completion")
    def test_custom_tools(self, make_rlm: MakeRLM) -> None:
        def lookup(city: str) -> int:
            if city == "nowhere":
                raise ValueError("unknown city")
            return {"Oslo": 700}[city]

        code = (
            "try:\n    lookup('nowhere')\nexcept Exception as e:\n    err = str(e)\n"
            'answer[\'content\'] = f\'{lookup("Oslo") * FACTOR}|{"unknown city" in err}|'
            "{triple(2)}'\nanswer['ready'] = True"
        )
        rlm = make_rlm(
            Script([repl(code)]),
            custom_tools={
                "lookup": lookup,
                "FACTOR": 2,
                "triple": {"tool": {"source": "def triple(x):\n    return 3 * x"}},
            },
        )
        assert rlm.completion("c").response == "1400|True|6"

    @case("RUN-007", "a source tool that fails is a clear error naming the tool")
    def test_failing_source_tool(self, make_rlm: MakeRLM) -> None:
        rlm = make_rlm(Script([finish("x")]), custom_tools={"f": {"source": "1/0"}})
        with pytest.raises(Exception, match="custom tool 'f': its source failed: ZeroDivision"):
            rlm.completion("c")

    @case("RUN-008", "dict and list contexts through a completion")
    def test_structured_contexts(self, make_rlm: MakeRLM) -> None:
        code = repl(
            "answer['content'] = f'{type(context).__name__}:"
            "{sorted(context) if isinstance(context, dict) else context[1]}'\n"
            "answer['ready'] = True"
        )
        assert make_rlm(Script([code])).completion({"b": 1, "a": [2]}).response == (
            "dict:['a', 'b']"
        )
        assert make_rlm(Script([code])).completion(["p", "q"]).response == "list:q"

    @case(
        "RUN-009",
        "64 batched sub-calls of one cell are in flight at the LM at once (counted)",
        requires=[SUBCALLS],
    )
    def test_concurrent_at_the_lm(self, make_rlm: MakeRLM) -> None:
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        enough = threading.Event()

        def sub(prompt: str) -> str:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                if state["now"] >= 32:
                    enough.set()
            enough.wait(timeout=20)
            with lock:
                state["now"] -= 1
            return prompt[::-1]

        code = (
            "rs = llm_query_batched([f'p{i:02d}' for i in range(64)])\n"
            "answer['content'] = ','.join(rs[:3]) + f'|{len(rs)}'\nanswer['ready'] = True"
        )
        rlm = make_rlm(Script([repl(code)], sub=sub), max_concurrent_subcalls=64)
        result = rlm.completion("c")
        assert result.response == "00p,10p,20p|64"
        assert state["peak"] >= 32, f"only {state['peak']} calls overlapped"
        assert result.usage_summary.model_usage_summaries["scripted"].total_calls == 65
