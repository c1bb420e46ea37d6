"""Recursion (rlm_query), routing and budgets that span the whole recursion tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from scripts import Script, finish, is_root, repl

from rlm_core import (
    RLM,
    BudgetExceededError,
    ErrorThresholdExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm_core.backends.scripted import estimate_tokens
from rlm_core.exceptions import SandboxCrashedError

Messages = list[dict[str, Any]]


def test_rlm_query_spawns_a_child_rlm_with_its_own_repl() -> None:
    def root(messages: Messages) -> str:
        # The child's context is the prompt it was given; its first reply reads it.
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if "chars: 11" in messages[1]["content"] or "11 total characters" in messages[1]["content"]:
            return repl("answer['content'] = 'child saw ' + context\nanswer['ready'] = True")
        if turn == 0:
            return repl("r = rlm_query('child input')\nprint(r)")
        return finish("parent done")

    started: list[tuple[int, str]] = []
    completed: list[tuple[int, str | None]] = []
    script = Script(root)
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        max_depth=2,
        on_subcall_start=lambda d, m, p: started.append((d, p)),
        on_subcall_complete=lambda d, m, t, e: completed.append((d, e)),
    )
    seen_outputs: list[str] = []
    original = script.root

    def spy(messages: Messages) -> str:
        for m in messages:
            if m["role"] == "user" and "REPL output" in m["content"]:
                seen_outputs.append(m["content"])
        return original(messages)  # type: ignore[operator]

    script.root = spy
    result = rlm.completion("parent context")
    assert result.response == "parent done"
    assert any("child saw child input" in out for out in seen_outputs)
    assert started == [(1, "child input")]
    assert completed == [(1, None)]


def test_rlm_query_at_max_depth_falls_back_to_a_plain_lm_call() -> None:
    script = Script(
        [repl("r = rlm_query('plain please')\nanswer['content'] = r\nanswer['ready'] = True")],
        sub=lambda p: f"LM:{p}",
    )
    result = RLM(backend="scripted", backend_kwargs={"responses": script}, max_depth=1).completion(
        "c"
    )
    assert result.response == "LM:plain please"
    assert script.sub_calls == ["plain please"]


def test_depth_at_max_depth_makes_completion_a_plain_lm_call() -> None:
    script = Script([], sub=lambda p: f"plain:{p}")
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, depth=1, max_depth=1)
    assert rlm.completion("hello").response == "plain:hello"


def _recursive_script(child_cost_calls: int = 1) -> Script:
    """Parent runs rlm_query_batched over 3 prompts; each child makes llm_query calls."""

    def root(messages: Messages) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        meta = messages[1]["content"]
        if meta.startswith("Your context is a str of 4 total") and turn == 0:
            # A child RLM: its context is the 4-character prompt 'KIDn'.
            calls = "\n".join(f"llm_query('from child {i}')" for i in range(child_cost_calls))
            return repl(calls + "\nanswer['content'] = 'kid:' + context\nanswer['ready'] = True")
        if turn == 0:
            return repl("rs = rlm_query_batched(['KID1', 'KID2', 'KID3'])\nprint(rs)")
        return finish("parent")

    return Script(root, sub=lambda p: "ok")


def test_rlm_query_batched_runs_children_and_usage_covers_the_whole_tree() -> None:
    script = _recursive_script(child_cost_calls=2)
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, max_depth=2)
    result = rlm.completion("the root context")
    assert result.response == "parent"
    # parent: 2 root calls; each of 3 children: 1 root call + 2 sub-calls.
    usage = result.usage_summary.model_usage_summaries["scripted"]
    assert usage.total_calls == 2 + 3 * (1 + 2)
    assert sorted(script.sub_calls) == sorted([f"from child {i}" for i in range(2)] * 3)


def test_child_outputs_are_visible_to_the_parent() -> None:
    seen: list[str] = []
    script = _recursive_script()
    original = script.root

    def spy(messages: Messages) -> str:
        seen.extend(m["content"] for m in messages if m["role"] == "user")
        return original(messages)  # type: ignore[operator]

    script.root = spy
    RLM(backend="scripted", backend_kwargs={"responses": script}, max_depth=2).completion(
        "the root context"
    )
    assert any("['kid:KID1', 'kid:KID2', 'kid:KID3']" in s for s in seen)


def test_model_argument_routes_to_the_named_model() -> None:
    models: list[str] = []

    def responses(messages: Messages, model: str) -> str:
        if is_root(messages):
            return repl(
                "a = llm_query('q', model='big-model')\nanswer['content'] = a\nanswer['ready'] = True"
            )
        models.append(model)
        return f"answered by {model}"

    result = RLM(backend="scripted", backend_kwargs={"responses": responses}).completion("c")
    assert result.response == "answered by big-model"
    assert "big-model" in result.usage_summary.model_usage_summaries


def test_other_backends_serve_the_root_rlms_subcalls() -> None:
    root = Script([repl("answer['content'] = llm_query('q')\nanswer['ready'] = True")])
    other = Script([], sub=lambda p: "from the other model")
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": root, "model_name": "root-model"},
        other_backends=["scripted"],
        other_backend_kwargs=[{"responses": other, "model_name": "sub-model"}],
    )
    result = rlm.completion("c")
    assert result.response == "from the other model"
    assert set(result.usage_summary.model_usage_summaries) == {"root-model", "sub-model"}


# -- budgets ---------------------------------------------------------------------------


def test_cost_budget_raises_with_partial_answer_and_stops_new_calls() -> None:
    script = Script(lambda m: repl("print(llm_query('spend'))"), sub=lambda p: "x" * 400)
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": script, "cost_per_token": 0.001},
        max_budget=0.5,
    )
    with pytest.raises(BudgetExceededError) as info:
        rlm.completion("c")
    err = info.value
    assert err.spent >= 0.5 and err.budget == 0.5
    assert err.partial_answer is not None and "llm_query" in err.partial_answer
    # Each root turn costs > 0 and each sub-call 0.1+: the budget stops it in a few turns.
    assert script.root_calls <= 5


def test_token_budget_raises() -> None:
    script = Script(lambda m: repl("print(llm_query('p' * 400))"), sub=lambda p: "y" * 40)
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, max_tokens=2_000)
    with pytest.raises(TokenLimitExceededError) as info:
        rlm.completion("c")
    assert info.value.tokens_used >= 2_000
    assert info.value.token_limit == 2_000


def test_timeout_raises_between_iterations() -> None:
    script = Script(lambda m: repl("import time\ntime.sleep(0.3)"))
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, max_timeout=0.5)
    with pytest.raises(TimeoutExceededError) as info:
        rlm.completion("c")
    assert info.value.timeout == 0.5
    assert info.value.elapsed >= 0.5
    assert script.root_calls <= 3


def test_error_threshold_counts_consecutive_failing_iterations() -> None:
    script = Script(lambda m: repl("1 / 0"))
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, max_errors=3)
    with pytest.raises(ErrorThresholdExceededError) as info:
        rlm.completion("c")
    assert info.value.error_count == 3
    assert "ZeroDivisionError" in (info.value.last_error or "")
    assert script.root_calls == 3


def test_error_count_resets_after_a_good_iteration() -> None:
    replies = [repl("1/0"), repl("1/0"), repl("x = 1"), repl("1/0"), repl("1/0"), finish("ok")]
    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script(replies)}, max_errors=3)
    assert rlm.completion("c").response == "ok"


def test_children_spend_from_what_the_parent_has_left() -> None:
    """A tree-wide cost budget: children's spending counts, and once it is gone no new
    LM call starts anywhere in the tree."""
    script = _recursive_script(child_cost_calls=5)
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": script, "cost_per_token": 0.0001},
        max_depth=2,
        max_budget=0.1,
        max_concurrent_subcalls=1,
    )
    with pytest.raises(BudgetExceededError) as info:
        rlm.completion("the root context")
    # Sequential children (max_concurrent_subcalls=1): once the budget is spent, every
    # further call is refused, so the overshoot is at most the one call in flight.
    max_single_call_cost = 0.0001 * (estimate_tokens("x" * 6_000) + 100)
    assert info.value.spent < 0.1 + max_single_call_cost
    assert len(script.sub_calls) < 15


def test_child_token_usage_is_charged_to_the_parent_token_budget() -> None:
    script = _recursive_script(child_cost_calls=3)
    unlimited = RLM(backend="scripted", backend_kwargs={"responses": script}, max_depth=2)
    total = unlimited.completion("the root context").usage_summary
    tokens = total.total_input_tokens + total.total_output_tokens
    # The parent's own two root calls use well under half of the tree's tokens; the
    # children's calls are what pushes the tree over this limit.
    parent_only_limit = tokens // 2
    script = _recursive_script(child_cost_calls=3)
    limited = RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        max_depth=2,
        max_tokens=parent_only_limit,
    )
    with pytest.raises(TokenLimitExceededError):
        limited.completion("the root context")


def test_usage_is_exact_under_many_concurrent_batched_calls() -> None:
    n = 64
    prompts = [f"prompt number {i} " + "z" * i for i in range(n)]

    def sub(prompt: str) -> str:
        time.sleep(0.001)
        return "r" * (len(prompt) % 17 + 1)

    code = f"rs = llm_query_batched({prompts!r})\nanswer['content'] = str(len(rs))\nanswer['ready'] = True"
    script = Script([repl(code)], sub=sub)
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, max_concurrent_subcalls=16)
    result = rlm.completion("c")
    usage = result.usage_summary.model_usage_summaries["scripted"]
    expected_sub_in = sum(estimate_tokens(p) for p in prompts)
    expected_sub_out = sum(estimate_tokens(sub(p)) for p in prompts)
    root_in = rlm._backends.default.calls[0]  # type: ignore[union-attr,attr-defined]
    expected_root_in = estimate_tokens("".join(str(m["content"]) for m in root_in))
    assert usage.total_calls == n + 1
    assert usage.total_input_tokens == expected_sub_in + expected_root_in
    assert usage.total_output_tokens == expected_sub_out + estimate_tokens(script.root[0])  # type: ignore[index]


def test_many_rlms_in_many_threads_keep_separate_exact_usage() -> None:
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            code = f"rs = llm_query_batched(['q'] * {i + 1})\nanswer['content'] = 'x'\nanswer['ready'] = True"
            rlm = RLM(
                backend="scripted",
                backend_kwargs={"responses": Script([repl(code)], sub=lambda p: "abcd")},
                max_concurrent_subcalls=8,
            )
            r = rlm.completion("c")
            results[i] = r.usage_summary.model_usage_summaries["scripted"].total_calls
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {i: i + 2 for i in range(16)}


def test_sub_lm_failure_is_an_error_string_in_the_cell_not_a_crash() -> None:
    def sub(prompt: str) -> str:
        raise RuntimeError("provider exploded")

    script = Script(
        [repl("r = llm_query('x')\nanswer['content'] = r\nanswer['ready'] = True")], sub=sub
    )
    result = RLM(backend="scripted", backend_kwargs={"responses": script}).completion("c")
    assert result.response.startswith("Error: LM query failed")
    assert "provider exploded" in result.response


def test_child_cell_output_does_not_leak_into_the_parent_cell() -> None:
    seen: list[str] = []

    def root(messages: Messages) -> str:
        seen.extend(m["content"] for m in messages if m["role"] == "user")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if messages[1]["content"].startswith("Your context is a str of 3 total"):
            return repl("print('CHILD-PRINT')\nanswer['content'] = 'c'\nanswer['ready'] = True")
        if turn == 0:
            return repl("print('PARENT-BEFORE')\nr = rlm_query('kid')\nprint('PARENT-AFTER', r)")
        return finish("done")

    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script(root)}, max_depth=2)
    assert rlm.completion("parent context").response == "done"
    parent_feedback = next(s for s in seen if "PARENT-BEFORE" in s)
    assert "PARENT-AFTER c" in parent_feedback
    assert "CHILD-PRINT" not in parent_feedback


def test_keyboard_interrupt_becomes_cancellation_with_partial_answer() -> None:
    from rlm_core import CancellationError

    script = Script([repl("x = 1"), repl("raise KeyboardInterrupt")])
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script})
    with pytest.raises(CancellationError) as info:
        rlm.completion("c")
    # The best answer so far is the reply of the last turn that completed.
    assert info.value.partial_answer is not None and "x = 1" in info.value.partial_answer


def test_rlm_query_with_a_model_uses_the_backend_serving_that_model() -> None:
    served: list[str] = []

    def backend(name: str) -> Any:
        def responses(messages: Messages, model: str) -> str:
            served.append(f"{name}:{model}")
            if messages[1]["content"].startswith("Your context is a str of 4 total"):  # child
                return finish(f"child on {name}")
            turn = sum(1 for m in messages if m["role"] == "assistant")
            if turn == 0:
                return repl("r = rlm_query('kid1', model='model-b')\nprint(r)")
            return repl("answer['content'] = r\nanswer['ready'] = True")

        return responses

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": backend("A"), "model_name": "model-a"},
        other_backends=["scripted"],
        other_backend_kwargs=[{"responses": backend("B"), "model_name": "model-b"}],
        max_depth=2,
    )
    result = rlm.completion("the root context")
    assert result.response == "child on B"
    assert "B:model-b" in served and "A:model-b" not in served
    usage = result.usage_summary.model_usage_summaries
    assert usage["model-a"].total_calls == 2 and usage["model-b"].total_calls == 1


def test_ctrl_c_does_not_wait_for_sub_calls_in_flight() -> None:
    finished: list[str] = []
    started = threading.Event()

    def sub(prompt: str) -> str:
        started.set()
        time.sleep(3)
        finished.append(prompt)
        return "late"

    code = "rs = llm_query_batched(['a', 'b', 'c', 'd'])"
    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script([repl(code)], sub=sub)})

    def interrupt() -> None:
        started.wait(10)
        # A real SIGINT, as Ctrl+C: interrupt_main() would not wake a blocked wait.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    from rlm_core import CancellationError

    with pytest.raises(CancellationError):
        rlm.completion("c")
    assert finished == []  # raised while every sub-call was still in flight


# -- worker threads ---------------------------------------------------------------------------


def test_worker_threads_are_kept_across_completions_and_stopped_by_close() -> None:
    seen: list[set[int]] = [set(), set()]
    run = [0]

    def sub(prompt: str) -> str:
        seen[run[0]].add(threading.get_ident())
        time.sleep(0.05)  # all four overlap, so each needs its own thread
        return "ok"

    code = "rs = llm_query_batched(['a', 'b', 'c', 'd'])\nanswer.update(content='done', ready=True)"
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script([repl(code)], sub=sub)},
        max_concurrent_subcalls=4,
    )
    assert rlm.completion("c").response == "done"
    run[0] = 1
    assert rlm.completion("c").response == "done"
    assert len(seen[0]) == 4
    assert seen[1] == seen[0]  # the second completion found the first one's threads
    assert threading.get_ident() not in seen[0]
    rlm.close()
    deadline = time.monotonic() + 10
    while seen[0] & {t.ident for t in threading.enumerate()}:
        assert time.monotonic() < deadline, "close() left worker threads running"
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_a_failed_run_cancels_the_sub_calls_it_has_not_started() -> None:
    started: list[str] = []

    def sub(prompt: str) -> str:
        started.append(prompt)
        time.sleep(1.0)
        return "late"

    code = (
        "import os, threading\n"
        "threading.Timer(0.3, lambda: os._exit(3)).start()\n"
        "rs = llm_query_batched(['a', 'b', 'c', 'd', 'e', 'f'])"
    )
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script([repl(code)], sub=sub)},
        environment="subprocess",
        max_concurrent_subcalls=1,
    )
    with pytest.raises(SandboxCrashedError):
        rlm.completion("c")
    time.sleep(3.0)  # time for three more sub-calls, had they not been cancelled
    assert started == ["a"]
    rlm.close()


@pytest.mark.timeout(60)
def test_a_finished_run_cancels_the_sub_calls_a_timed_out_cell_left_queued() -> None:
    started: list[str] = []

    def sub(prompt: str) -> str:
        started.append(prompt)
        time.sleep(1.0)
        return "late"

    code = "rs = llm_query_batched(['a', 'b', 'c', 'd', 'e', 'f'])"
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": Script([repl(code), finish("done")], sub=sub)},
        environment="subprocess",
        environment_kwargs={"cell_timeout": 0.5},
        max_concurrent_subcalls=1,
    )
    try:
        assert rlm.completion("c").response == "done"  # the cell timed out inside the batch
        time.sleep(3.0)  # time for three more sub-calls, had they not been cancelled
        assert started == ["a"]
    finally:
        rlm.close()


USED_BEFORE_A_FORK = """
import os, signal, sys, time
from scripts import Script, repl
from rlm_core import RLM

def sub(prompt):
    time.sleep(0.2)  # the two overlap: each gets a worker thread, idle once done
    return "ok"

code = "rs = llm_query_batched(['a', 'b'])\\nanswer.update(content=','.join(rs), ready=True)"
rlm = RLM(backend="scripted", backend_kwargs={"responses": Script([repl(code)], sub=sub)})
print("parent", rlm.completion("c").response, flush=True)
pid = os.fork()
if pid == 0:  # the worker threads did not survive the fork
    signal.alarm(30)  # a hung child ends instead of outliving the test
    print("child", rlm.completion("c").response, flush=True)
    os._exit(0)
print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_rlm_used_before_a_fork_serves_batched_sub_calls_in_the_child() -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (tests, os.path.dirname(tests), environ.get("PYTHONPATH")) if p
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", USED_BEFORE_A_FORK],
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the forked child hung on its batched sub-calls: {exc.stdout!r}")
    assert result.stdout.splitlines() == ["parent ok,ok", "child ok,ok", "child exit 0"], (
        result.stderr
    )
