"""The RLM loop on the local environment with the scripted test LM."""

from __future__ import annotations

import asyncio
import inspect
import json
import re

import pytest
from scripts import Script, finish, repl

from rlm_core import RLM, RLMChatCompletion, RLMLogger
from rlm_core.backends.scripted import ScriptedBackend, estimate_tokens
from rlm_core.exceptions import ScriptExhaustedError


def make_rlm(script: Script, **kwargs: object) -> RLM:
    return RLM(backend="scripted", backend_kwargs={"responses": script}, **kwargs)  # type: ignore[arg-type]


def test_constructor_accepts_every_rlms_argument_with_the_same_defaults() -> None:
    ours = inspect.signature(RLM.__init__).parameters
    expected = {
        "backend": "openai",
        "backend_kwargs": None,
        "environment": "local",
        "environment_kwargs": None,
        "depth": 0,
        "max_depth": 1,
        "max_iterations": 30,
        "max_budget": None,
        "max_timeout": None,
        "max_tokens": None,
        "max_errors": None,
        "custom_system_prompt": None,
        "other_backends": None,
        "other_backend_kwargs": None,
        "logger": None,
        "verbose": False,
        "persistent": False,
        "custom_tools": None,
        "custom_sub_tools": None,
        "compaction": False,
        "compaction_threshold_pct": 0.85,
        "max_concurrent_subcalls": 4,
        "on_subcall_start": None,
        "on_subcall_complete": None,
        "on_iteration_start": None,
        "on_iteration_complete": None,
        "sampling_args": None,
        "sub_sampling_args": None,
        "orchestrator": True,
        "user_prologue": None,
    }
    assert [p for p in ours if p != "self"] == list(expected)
    for name, default in expected.items():
        assert ours[name].default == default, name


def test_answer_is_computed_in_the_repl_over_the_context() -> None:
    script = Script(
        [
            repl("words = context.split()\nprint(len(words))"),
            repl("answer['content'] = str(len(words) * 2)\nanswer['ready'] = True"),
        ]
    )
    result = make_rlm(script).completion("a b c d e", root_prompt="double the word count")
    assert isinstance(result, RLMChatCompletion)
    assert result.response == "10"
    assert result.root_model == "scripted"
    assert result.error is None
    assert script.root_calls == 2


def test_root_lm_sees_metadata_not_the_context_and_gets_outputs_back() -> None:
    seen: list[list[dict[str, str]]] = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return [repl("print('probe', len(context))"), finish("ok")][len(seen) - 1]

    secret = "SECRET-" * 1000
    make_rlm(Script(root)).completion(secret, root_prompt="what is it?")
    first = seen[0]
    assert first[0]["role"] == "system" and "llm_query" in first[0]["content"]
    assert "Answer the following: what is it?" in first[1]["content"]
    assert "str of 7000 total characters" in first[1]["content"]
    assert all("SECRET-SECRET" not in m["content"] for m in first)
    assert first[-1]["content"].endswith("Turn 1/30:")
    second = seen[1]
    assert second[-2]["role"] == "user" and "probe 7000" in second[-2]["content"]
    assert second[-1]["content"] == "Turn 2/30:"


def test_subcalls_from_cells_reach_the_sub_lm_and_are_recorded() -> None:
    script = Script(
        [
            repl(
                "one = llm_query('summarise A')\n"
                "many = llm_query_batched(['x1', 'x2', 'x3'])\n"
                "print(one, many)\n"
                "answer['content'] = one + '|' + '|'.join(many)\n"
                "answer['ready'] = True"
            )
        ],
        sub=lambda p: p.upper(),
    )
    logger = RLMLogger()
    result = make_rlm(script, logger=logger).completion("ctx")
    assert result.response == "SUMMARISE A|X1|X2|X3"
    assert sorted(script.sub_calls) == ["summarise A", "x1", "x2", "x3"]
    calls = result.metadata["iterations"][0]["code_blocks"][0]["result"]["rlm_calls"]  # type: ignore[index]
    assert [c["response"] for c in calls] == ["SUMMARISE A", "X1", "X2", "X3"]


def test_several_blocks_run_in_order_and_output_is_fed_back_per_block() -> None:
    seen = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        if len(seen) == 1:
            return repl("x = 1\nprint('first', x)") + "\n" + repl("x += 1\nprint('second', x)")
        return finish("done")

    make_rlm(Script(root)).completion("c")
    feedback = seen[1][-2]["content"]
    assert "REPL output (block 1):" in feedback and "first 1" in feedback
    assert "REPL output (block 2):" in feedback and "second 2" in feedback


def test_huge_output_is_truncated_with_a_clear_marker() -> None:
    seen = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return repl("print('z' * 100_000)") if len(seen) == 1 else finish("ok")

    make_rlm(Script(root)).completion("c")
    feedback = seen[1][-2]["content"]
    assert len(feedback) < 21_000
    assert re.search(r"z\.\.\. \+ \[\d+ chars\.\.\.\]$", feedback), feedback[-80:]


def test_reply_without_code_or_answer_is_nudged_not_crashed() -> None:
    seen = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return ["I think the answer is probably 42.", "", finish("42")][len(seen) - 1]

    result = make_rlm(Script(root)).completion("c")
    assert result.response == "42"
    assert "no ```repl``` block" in seen[1][-2]["content"]


def test_unclosed_repl_fence_still_runs() -> None:
    script = Script(["```repl\nanswer['content'] = 'cut'\nanswer['ready'] = True"])
    assert make_rlm(script).completion("c").response == "cut"


def test_malformed_python_is_reported_and_the_loop_continues() -> None:
    seen = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return [repl("def broken(:\n  pass"), finish("recovered")][len(seen) - 1]

    result = make_rlm(Script(root)).completion("c")
    assert result.response == "recovered"
    assert "SyntaxError" in seen[1][-2]["content"]


def test_max_iterations_forces_a_final_answer() -> None:
    def root(messages: list[dict[str, str]]) -> str:
        if "run out of turns" in messages[-1]["content"]:
            return "best guess: 7"
        return repl("print('still working')")

    script = Script(root)
    result = make_rlm(script, max_iterations=3).completion("c")
    assert result.response == "best guess: 7"
    assert script.root_calls == 4


def test_usage_is_exact_over_root_and_sub_calls() -> None:
    script = Script(
        [
            repl(
                "r = llm_query_batched(['p' * 40] * 5)\n"
                "answer['content'] = 'x'\nanswer['ready'] = True"
            )
        ],
        sub=lambda p: "y" * 8,
    )
    rlm = make_rlm(script)
    result = rlm.completion("context")
    usage = result.usage_summary.model_usage_summaries["scripted"]
    assert usage.total_calls == 6
    backend = rlm._backends.default  # type: ignore[union-attr]
    assert isinstance(backend, ScriptedBackend)
    expected_in = sum(
        estimate_tokens("".join(str(m["content"]) for m in call)) for call in backend.calls
    )
    assert usage.total_input_tokens == expected_in
    # 5 sub replies of 8 chars (2 tokens each) plus the root reply.
    root_reply = script.root[0]  # type: ignore[index]
    assert usage.total_output_tokens == 5 * 2 + estimate_tokens(root_reply)


def test_list_and_dict_contexts() -> None:
    code = repl(
        "answer['content'] = f'{type(context).__name__}:{len(context)}'\nanswer['ready'] = True"
    )
    assert make_rlm(Script([code])).completion(["a", "b", "c"]).response == "list:3"
    assert make_rlm(Script([code])).completion({"k": 1, "j": 2}).response == "dict:2"


def test_acompletion_is_the_asyncio_twin() -> None:
    async def main() -> list[str]:
        rlms = [make_rlm(Script([finish(f"a{i}")])) for i in range(3)]
        results = await asyncio.gather(*(r.acompletion("c") for r in rlms))
        return [r.response for r in results]

    assert asyncio.run(main()) == ["a0", "a1", "a2"]


def test_script_exhausted_is_a_typed_error() -> None:
    rlm = RLM(backend="scripted", backend_kwargs={"responses": [repl("print(1)")]})
    with pytest.raises(ScriptExhaustedError, match="only 1 replies"):
        rlm.completion("c")


def test_logger_writes_rlms_jsonl_format(tmp_path: object) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    script = Script([repl("print(llm_query('hi'))"), finish("done")])
    result = make_rlm(script, logger=logger).completion("c")
    assert logger.log_file_path is not None
    with open(logger.log_file_path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert lines[0]["type"] == "metadata"
    assert {"root_model", "max_depth", "max_iterations", "backend", "backend_kwargs"} <= set(
        lines[0]
    )
    assert [line["type"] for line in lines[1:]] == ["iteration", "iteration"]
    first = lines[1]
    assert first["iteration"] == 1
    assert {"prompt", "response", "code_blocks", "final_answer", "iteration_time"} <= set(first)
    block = first["code_blocks"][0]
    assert set(block) == {"code", "result"}
    assert {"stdout", "stderr", "locals", "execution_time", "rlm_calls", "final_answer"} <= set(
        block["result"]
    )
    assert lines[2]["final_answer"] == "done"
    assert result.metadata is not None and len(result.metadata["iterations"]) == 2


def test_api_keys_never_reach_the_log(tmp_path: object) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    RLM(
        backend="scripted",
        backend_kwargs={"responses": [finish("x")], "api_key": "sk-very-secret"},
        logger=logger,
    ).completion("c")
    assert logger.log_file_path is not None
    with open(logger.log_file_path, encoding="utf-8") as f:
        assert "sk-very-secret" not in f.read()


def test_iteration_callbacks_fire() -> None:
    events: list[tuple[object, ...]] = []
    script = Script([repl("x = 1"), finish("ok")])
    make_rlm(
        script,
        on_iteration_start=lambda d, n: events.append(("start", d, n)),
        on_iteration_complete=lambda d, n, t: events.append(("end", d, n, t >= 0)),
    ).completion("c")
    assert events == [
        ("start", 0, 1),
        ("end", 0, 1, True),
        ("start", 0, 2),
        ("end", 0, 2, True),
    ]


def test_verbose_prints_progress(capfd: pytest.CaptureFixture[str]) -> None:
    make_rlm(Script([repl("print('hello from cell')"), finish("fin")]), verbose=True).completion(
        "c"
    )
    out = capfd.readouterr().out
    assert "iteration 1" in out and "hello from cell" in out and "fin" in out


def test_custom_system_prompt_orchestrator_and_prologue() -> None:
    seen = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        return finish("ok")

    make_rlm(
        Script(root),
        custom_system_prompt="You are terse.{custom_tools_section}",
        orchestrator=False,
        user_prologue="Tip: be quick.",
    ).completion("c")
    assert seen[0][0]["content"] == "You are terse."
    assert seen[0][2] == {"role": "user", "content": "Tip: be quick."}


def test_setup_code_runs_once_after_context_load() -> None:
    script = Script([repl("answer['content'] = prepared\nanswer['ready'] = True")])
    rlm = make_rlm(script, environment_kwargs={"setup_code": "prepared = context.upper()"})
    assert rlm.completion("abc").response == "ABC"


def test_sampling_args_reach_the_backend_kwargs() -> None:
    rlm = make_rlm(
        Script([finish("x")]), sampling_args={"temperature": 0.1}, sub_sampling_args={"seed": 3}
    )
    assert rlm.backend_kwargs["sampling_args"] == {"temperature": 0.1}
    assert rlm.other_backends == ["scripted"]
    assert rlm.other_backend_kwargs is not None
    # As in rlms: the sub backend mirrors the root kwargs, then sub_sampling_args apply.
    assert rlm.other_backend_kwargs[0]["sampling_args"] == {"temperature": 0.1, "seed": 3}


def test_nested_secrets_never_reach_the_log(tmp_path: object) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    RLM(
        backend="scripted",
        backend_kwargs={
            "responses": [finish("x")],
            "default_headers": {"Authorization": "Bearer sk-HEADER-SECRET", "X-Trace": "ok"},
        },
        environment="subprocess",
        environment_kwargs={"env": {"OPENAI_API_KEY": "sk-ENV-SECRET", "MODE": "fast"}},
        logger=logger,
    ).completion("c")
    assert logger.log_file_path is not None
    with open(logger.log_file_path, encoding="utf-8") as f:
        text = f.read()
    assert "sk-HEADER-SECRET" not in text and "sk-ENV-SECRET" not in text
    assert "X-Trace" in text and "fast" in text
