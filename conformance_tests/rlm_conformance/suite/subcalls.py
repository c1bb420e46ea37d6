"""SUB: sub-calls keep order, run concurrently, surface errors and are accounted exactly."""

from __future__ import annotations

from typing import Any

from rlm_conformance.cases import case
from rlm_conformance.doubles import RecordingSubcalls, Script, repl
from rlm_conformance.fixtures import MakeRLM, StartEnv
from rlm_conformance.suite.helpers import ok, value
from rlm_core.backends.scripted import estimate_tokens
from rlm_core.environments.base import SUBCALLS, Environment


class SubcallTests:
    """What happens between a cell's ``llm_query`` and the LM."""

    @case("SUB-001", "64 batched prompts come back in prompt order", requires=[SUBCALLS])
    def test_order(self, start_env: StartEnv) -> None:
        def answer(prompt: Any, kind: str) -> str:
            return str(prompt)[::-1]

        env = start_env(RecordingSubcalls(answer=answer), max_concurrent_subcalls=16)
        replies = value(env, "llm_query_batched([f'p{i:02d}' for i in range(64)])")
        assert replies == [f"p{i:02d}"[::-1] for i in range(64)]

    @case(
        "SUB-002",
        "batched calls are in flight at the LM at the same time (counted)",
        requires=[SUBCALLS],
    )
    def test_concurrency(self, start_env: StartEnv) -> None:
        handler = RecordingSubcalls(hold=16)
        env = start_env(handler, max_concurrent_subcalls=16)
        assert len(value(env, "llm_query_batched(['q'] * 16)")) == 16
        assert handler.peak >= 16, f"only {handler.peak} calls overlapped"

    @case("SUB-003", "an LM error reaches the cell as an 'Error: ...' reply", requires=[SUBCALLS])
    def test_lm_error(self, start_env: StartEnv) -> None:
        env = start_env(RecordingSubcalls(fail=lambda prompt: "bad" in str(prompt)))
        replies = value(env, "[llm_query('bad one'), *llm_query_batched(['good', 'bad two'])]")
        assert replies[0].startswith("Error:") and replies[2].startswith("Error:")
        assert replies[1] == "llm:good"

    @case("SUB-004", "a cell's result lists its sub-calls with their replies", requires=[SUBCALLS])
    def test_calls_in_result(self, env: Environment) -> None:
        result = env.execute("llm_query('one')\nllm_query_batched(['two', 'three'])")
        assert result.error is None
        assert sorted(c.response for c in result.rlm_calls) == [
            "llm:one", "llm:three", "llm:two",
        ]  # fmt: skip

    @case(
        "SUB-005",
        "prompts that are message lists reach the LM unchanged",
        requires=[SUBCALLS],
    )
    def test_message_prompts(self, env: Environment, subcalls: RecordingSubcalls) -> None:
        ok(env, "llm_query([{'role': 'user', 'content': 'hi é'}])")
        assert subcalls.calls[0][1] == [{"role": "user", "content": "hi é"}]

    @case("SUB-006", "a 5 MB prompt and a 5 MB reply travel whole", requires=[SUBCALLS])
    def test_large(self, start_env: StartEnv) -> None:
        env = start_env(RecordingSubcalls(answer=lambda prompt, kind: str(prompt) + "!"))
        out = ok(env, "r = llm_query('p' * 5_000_000)\nprint(len(r), r[-2:])")
        assert out == "5000001 p!\n"

    @case("SUB-007", "sub-calls from a cell's own threads are all answered", requires=[SUBCALLS])
    def test_from_threads(self, env: Environment) -> None:
        code = (
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(8) as pool:\n"
            "    got = list(pool.map(llm_query, [f't{i}' for i in range(8)]))"
        )
        ok(env, code)
        assert value(env, "got") == [f"llm:t{i}" for i in range(8)]

    @case(
        "SUB-008",
        "usage is recorded exactly: every root and sub-call, tokens included",
        requires=[SUBCALLS],
    )
    def test_usage(self, make_rlm: MakeRLM) -> None:
        code = (
            "a = llm_query('first')\nb = llm_query_batched(['x', 'yy', 'zzz'])\n"
            "answer['content'] = a + '|' + '|'.join(b)\nanswer['ready'] = True"
        )
        replies: list[str] = []

        def sub(prompt: str) -> str:
            reply = f"reply to {prompt}"
            replies.append(reply)
            return reply

        root = repl(code)
        script = Script([root], sub=sub)
        result = make_rlm(script).completion("ctx")
        usage = result.usage_summary.model_usage_summaries["scripted"]
        assert usage.total_calls == 1 + 4
        assert script.root_calls == 1 and len(script.sub_calls) == 4
        expected_output = estimate_tokens(root) + sum(estimate_tokens(r) for r in replies)
        assert usage.total_output_tokens == expected_output
        depth1 = result.usage_summary.by_depth[1].model_usage_summaries["scripted"]
        assert depth1.total_calls == 4
