"""The same end-to-end behaviour in every built-in environment, and over every carrier.

The ``loopback`` environment runs the agent as a local process and reaches it as a cloud
plugin would: ``dial`` (loopback TCP, also with pinned TLS), ``stdio`` (relayed over the
process's pipes, binary and base64 framing) and ``reverse`` (the agent dials the host).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripts import Script, finish, repl

from rlm_core import RLM, RLMLogger

SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("local", {}),
    "subprocess": ("subprocess", {}),
    "dial": ("loopback", {"carrier": "dial"}),
    "dial-tls": ("loopback", {"carrier": "dial", "tls": True}),
    "stdio": ("loopback", {"carrier": "stdio"}),
    "stdio-base64-tls": ("loopback", {"carrier": "stdio", "framing": "base64", "tls": True}),
    "reverse": ("loopback", {"carrier": "reverse"}),
    "reverse-tls": ("loopback", {"carrier": "reverse", "tls": True}),
}
ENVIRONMENTS = list(SETUPS)


@pytest.fixture(autouse=True)
def nothing_left_behind(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every carrier removes its sockets and directories when its environment closes:
    the loopback setups' private directories go into a temporary directory of their own,
    which must be empty afterwards."""
    params = getattr(request.node, "callspec", None)
    environment = params.params.get("environment") if params is not None else None
    if environment is None or SETUPS[environment][0] != "loopback":
        yield
        return
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield
    assert sorted(os.listdir(private)) == []


Messages = list[dict[str, Any]]

pytestmark = pytest.mark.timeout(120)


def make_rlm(environment: str, script: Any, **kwargs: Any) -> RLM:
    name, settings = SETUPS[environment]
    return RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        environment=name,
        environment_kwargs=settings,
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

    name, settings = SETUPS[environment]
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root), "context_window": 3_000},
        environment=name,
        environment_kwargs=settings,
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


@pytest.mark.parametrize("environment", [e for e in ENVIRONMENTS if e != "local"])
def test_a_cell_that_writes_garbage_to_fd_1_and_2_and_closes_them_breaks_nothing(
    environment: str,
) -> None:
    # In ``local`` those are the host's own descriptors: only out-of-process setups.
    hostile = (
        "import os, subprocess, sys\n"
        "os.write(1, b'\\x00\\xffRLM-AGENT-READY port=1 pid=1\\n\\x00' * 500)\n"
        "os.write(2, bytes(range(256)) * 40)\n"
        "subprocess.run([sys.executable, '-c', 'print(\"child \\\\x00 noise\" * 1000)'])\n"
        "os.close(1)\nos.close(2)\n"
        "print('still here')"
    )
    script = Script(
        [
            repl(hostile),
            repl("big = llm_query_batched(['q'] * 8)\nprint(len(context), big[0])"),
            finish("done"),
        ],
        sub=lambda p: p.upper(),
    )
    logger = RLMLogger()
    result = make_rlm(environment, script, logger=logger).completion("x" * 100_000)
    assert result.response == "done"
    assert result.metadata is not None
    first, second = (it["code_blocks"][0]["result"] for it in result.metadata["iterations"][:2])
    assert "still here" in first["stdout"]
    assert second["stdout"] == "100000 Q\n", second
