"""The ``local`` environment and the REPL namespace it shares with other environments."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from scripts import EchoHandler, Script, finish, repl

from rlm_core import RLM
from rlm_core.environments.base import Session
from rlm_core.environments.local import LocalEnvironment


@pytest.fixture
def env() -> LocalEnvironment:
    e = LocalEnvironment()
    e.start(Session(subcalls=EchoHandler()))
    e.add_context("the context")
    yield e  # type: ignore[misc]
    e.close()


def test_repl_names_exist(env: LocalEnvironment) -> None:
    result = env.execute(
        "print(context, context_0)\n"
        "print(llm_query('a'), llm_query_batched(['b', 'c']))\n"
        "print(rlm_query('d'), rlm_query_batched(['e']))\n"
        "print(answer)\n"
        "print(SHOW_VARS())"
    )
    assert result.error is None, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the context the context"
    assert lines[1] == "llm:a ['llm:b', 'llm:c']"
    assert lines[2] == "rlm:d ['rlm:e']"
    assert lines[3] == "{'content': '', 'ready': False}"
    assert "context" in lines[4] and "context_0" in lines[4]
    assert [c.response for c in result.rlm_calls] == ["llm:a", "llm:b", "llm:c", "rlm:d", "rlm:e"]


def test_state_persists_across_cells(env: LocalEnvironment) -> None:
    env.execute("x = 41\ndef inc(v):\n    return v + 1")
    assert env.execute("print(inc(x))").stdout == "42\n"
    assert env.get_variable("x") == 41


def test_tracebacks_are_text_with_cell_lines(env: LocalEnvironment) -> None:
    result = env.execute("def f():\n    return 1 / 0\n\nf()")
    assert result.error == "ZeroDivisionError: division by zero"
    assert "Traceback (most recent call last)" in result.stderr
    assert "return 1 / 0" in result.stderr
    assert "rlm_core" not in result.stderr


def test_output_before_an_error_is_kept(env: LocalEnvironment) -> None:
    result = env.execute("print('before')\nraise ValueError('boom')")
    assert result.stdout == "before\n"
    assert "ValueError: boom" in result.stderr


def test_sys_exit_is_reported_not_fatal(env: LocalEnvironment) -> None:
    result = env.execute("import sys\nprint('bye')\nsys.exit(3)")
    assert result.error == "SystemExit: 3"
    assert "bye" in result.stdout
    assert env.execute("print('still alive')").stdout == "still alive\n"
    assert env.execute("exit()").error == "SystemExit: None"


def test_input_raises_instead_of_hanging(env: LocalEnvironment) -> None:
    result = env.execute("input('name? ')")
    assert result.error is not None and "input() is not available" in result.error


def test_reserved_names_are_restored_after_a_cell_rebinds_them(env: LocalEnvironment) -> None:
    env.execute("context = 'clobbered'\nllm_query = None\nanswer = 5\nSHOW_VARS = 1")
    result = env.execute(
        "print(context)\nprint(llm_query('x'))\nprint(answer)\nprint(SHOW_VARS()[:9])"
    )
    assert result.stdout.splitlines() == [
        "the context",
        "llm:x",
        "{'content': '', 'ready': False}",
        "Available",
    ]


def test_answer_detection_even_when_answer_is_rebound(env: LocalEnvironment) -> None:
    assert env.execute("answer = {'content': 7, 'ready': True}").final_answer == "7"
    assert env.execute("answer['content'] = 'x'").final_answer == "x"  # still ready
    env.set_variable("answer", {"content": "", "ready": False})
    assert env.execute("answer.update(content='y', ready=True)").final_answer == "y"


def test_stderr_prints_are_captured(env: LocalEnvironment) -> None:
    result = env.execute("import sys\nprint('warn', file=sys.stderr)")
    assert result.stderr == "warn\n" and result.error is None


def test_huge_output_is_capped_in_memory(env: LocalEnvironment) -> None:
    result = env.execute("for _ in range(30):\n    print('x' * 100_000)")
    assert len(result.stdout) < 1_100_000
    assert "[output capped:" in result.stdout


def test_locals_report_values_as_rlms_logs_them(env: LocalEnvironment) -> None:
    result = env.execute("n = 3\nimport json\nitems = [1, (2, 'b')]\n_hidden = 1")
    assert result.locals["n"] == 3
    assert result.locals["items"] == [1, [2, "b"]]
    assert result.locals["json"] == "<module 'json'>"
    assert result.locals["answer"] == {"content": "", "ready": False}
    assert "llm_query" not in result.locals and "_hidden" not in result.locals


def test_two_rlms_in_two_threads_capture_only_their_own_output() -> None:
    barrier = threading.Barrier(2)
    outputs: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def run(tag: str) -> None:
        seen: list[str] = []

        def root(messages: list[dict[str, str]]) -> str:
            for m in messages:
                if m["role"] == "user" and "REPL output" in m["content"]:
                    seen.append(m["content"])
            turn = sum(1 for m in messages if m["role"] == "assistant")
            if turn == 0:
                return repl(
                    "import time\n"
                    f"for i in range(200):\n    print('{tag}', i)\n    time.sleep(0.0005)"
                )
            return finish(tag)

        try:
            barrier.wait()
            RLM(backend="scripted", backend_kwargs={"responses": Script(root)}).completion("c")
            outputs[tag] = seen
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in ("AAA", "BBB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for tag, other in (("AAA", "BBB"), ("BBB", "AAA")):
        text = outputs[tag][0]
        assert text.count(tag) == 200
        assert other not in text


def test_host_stdout_is_untouched_outside_cells(
    env: LocalEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.execute("print('inside')")
    print("outside")
    sys.stdout.flush()
    assert capsys.readouterr().out == "outside\n"


def test_custom_tools_functions_and_values() -> None:
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    script = Script([repl("answer['content'] = str(double(RATE))\nanswer['ready'] = True")])
    seen: list[list[dict[str, str]]] = []
    original = script.root

    def spy(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return original[0]  # type: ignore[index]

    script.root = spy
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        custom_tools={"double": {"tool": double, "description": "Doubles a number"}, "RATE": 21},
    )
    assert rlm.completion("c").response == "42"
    assert calls == [21]
    system = seen[0][0]["content"]
    assert "`double`: Doubles a number" in system and "`RATE`: A custom int value" in system


def test_custom_tools_cannot_use_reserved_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        RLM(backend="scripted", backend_kwargs={"responses": []}, custom_tools={"context": 1})


def test_custom_sub_tools_go_to_child_rlms() -> None:
    def root(messages: list[dict[str, str]]) -> str:
        if "str of 5 total" in messages[1]["content"]:  # the child (context 'child')
            return repl(
                "answer['content'] = f'{has_tool()}:{\"parent_only\" in dir()}'\nanswer['ready'] = True"
            )
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn == 0:
            return repl(
                "answer['content'] = rlm_query('child') + '|' + str(parent_only())\nanswer['ready'] = True"
            )
        return finish("unexpected")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root)},
        max_depth=2,
        custom_tools={"parent_only": lambda: "P"},
        custom_sub_tools={"has_tool": lambda: "SUB"},
    )
    assert rlm.completion("the parent context").response == "SUB:False|P"


def test_persistent_keeps_repl_state_and_histories() -> None:
    turn_replies = {
        0: [repl("memo = context.upper()\nanswer['content'] = memo\nanswer['ready'] = True")],
        1: [
            repl(
                "answer['content'] = f'{memo}+{context_1}+{len(history)}+{history_0[0][\"role\"]}'\n"
                "answer['ready'] = True"
            )
        ],
    }
    seen: list[list[dict[str, str]]] = []
    state = {"call": 0}

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return turn_replies[state["call"]][0]

    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script(root)}, persistent=True)
    try:
        assert rlm.completion("first").response == "FIRST"
        state["call"] = 1
        second = rlm.completion("second")
        assert second.response.startswith("FIRST+second+")
        assert second.response.endswith("+system")
        last_prompt = seen[-1][-1]["content"]
        assert "2 contexts available" in last_prompt
        assert "1 prior conversation history" in last_prompt
    finally:
        rlm.close()


def test_persistent_requires_a_persistent_environment(register_plugin: Any) -> None:
    from rlm_core.hookspecs import hookimpl

    class Ephemeral(LocalEnvironment):
        capabilities = frozenset()

    class Plugin:
        @hookimpl
        def rlm_register_environments(self, register: Any) -> None:
            register("ephemeral-test", Ephemeral)

    register_plugin(Plugin(), "ephemeral-test-plugin")
    with pytest.raises(ValueError, match="persistent=True is not supported"):
        RLM(environment="ephemeral-test", persistent=True)


def test_compaction_summarises_and_keeps_full_history_in_the_repl() -> None:
    seen: list[list[dict[str, str]]] = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        last = messages[-1]["content"]
        if last.startswith("Summarize your progress"):
            return "SUMMARY: printed filler twice"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if "compacted 1 time" in str(messages):
            return repl(
                "kinds = [type(e).__name__ for e in history]\n"
                "answer['content'] = ','.join(kinds) + '|' + history[-1]['content']\n"
                "answer['ready'] = True"
            )
        return repl(f"print('filler {turn} ' + 'w' * 2000)")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root), "context_window": 3_000},
        compaction=True,
        compaction_threshold_pct=0.85,
    )
    result = rlm.completion("c")
    kinds, summary = result.response.split("|")
    assert summary == "SUMMARY: printed filler twice"
    assert kinds.split(",")[-1] == "dict" and "list" in kinds
    assert "`history`" in seen[0][0]["content"]
    after = [m for m in seen if "compacted 1 time" in str(m)]
    assert after and len(after[0]) <= 6  # system, metadata, summary, resume, turn prompt


def test_callback_output_goes_to_the_console_not_into_the_cell() -> None:
    seen: list[str] = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.extend(m["content"] for m in messages if m["role"] == "user")
        if messages[1]["content"].startswith("Your context is a str of 3 total"):  # the child
            return finish("kid")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        return repl("print('cell says hi', rlm_query('kid'))") if turn == 0 else finish("ok")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root)},
        max_depth=2,
        on_subcall_start=lambda d, m, p: print("[progress] child started"),
        on_iteration_start=lambda d, n: print(f"[progress] depth {d} turn {n}"),
    )
    assert rlm.completion("parent context").response == "ok"
    feedback = next(s for s in seen if "cell says hi" in s)
    assert "[progress]" not in feedback


def test_numbered_contexts_and_histories_are_restored_after_a_cell(env: LocalEnvironment) -> None:
    env.add_context("second")
    env.add_history([{"role": "user", "content": "h"}])
    env.execute("context = context_0 = context_1 = history_0 = 'clobbered'")
    result = env.execute("print(context, context_0, context_1, history_0[0]['content'])")
    assert result.stdout == "the context the context second h\n"


def test_compaction_keeps_the_user_prologue() -> None:
    seen: list[list[dict[str, str]]] = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        if messages[-1]["content"].startswith("Summarize your progress"):
            return "SUMMARY"
        if "compacted 1 time" in str(messages):
            return finish("done")
        return repl("print('w' * 4000)")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root), "context_window": 3_000},
        compaction=True,
        user_prologue="PROLOGUE: be brief",
    )
    assert rlm.completion("c").response == "done"
    after = next(m for m in seen if "compacted 1 time" in str(m))
    assert after[2] == {"role": "user", "content": "PROLOGUE: be brief"}


def test_concurrent_calls_on_one_rlm_keep_their_trajectories_apart() -> None:
    import asyncio

    from rlm_core import RLMLogger

    def root(messages: list[dict[str, str]]) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn < 3:
            return repl("import time\ntime.sleep(0.01)")
        return repl("answer['content'] = context\nanswer['ready'] = True")

    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script(root)}, logger=RLMLogger())

    async def both() -> list[Any]:
        return list(await asyncio.gather(rlm.acompletion("A"), rlm.acompletion("B")))

    a, b = asyncio.run(both())
    assert (a.response, b.response) == ("A", "B")
    assert len(a.metadata["iterations"]) == 4 and len(b.metadata["iterations"]) == 4


def test_persistent_compaction_names_past_conversations_by_number() -> None:
    seen: list[list[dict[str, str]]] = []
    replies = iter(
        [
            finish("one"),
            repl(
                "answer['content'] = f'{history_0[0][\"role\"]}|{type(history).__name__}'\n"
                "answer['ready'] = True"
            ),
        ]
    )

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return next(replies)

    with RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(root)},
        persistent=True,
        compaction=True,
    ) as rlm:
        rlm.completion("first")
        assert rlm.completion("second").response == "system|list"
    note = seen[-1][-1]["content"]
    assert "available in `history_0`" in note and "in the `history`" not in note
