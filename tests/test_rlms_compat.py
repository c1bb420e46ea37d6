"""An ``rlms`` script runs unchanged but for its import line, over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from lm_server import LMServer

from rlm_core import RLM, BackendError

RLMS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rlm import RLM

    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "gpt-4o-mini", "base_url": sys.argv[1]},
        environment="local",
        max_iterations=5,
    )
    result = rlm.completion("alpha beta gamma " * 2000, root_prompt="How many words?")
    print(json.dumps({"response": result.response,
                      "usage": result.usage_summary.to_dict(),
                      "root_model": result.root_model}))
    """
)


def server_script(body: dict[str, Any]) -> str:
    """Root turns (system prompt present) run real code; sub-calls count words."""
    messages = body["messages"]
    if messages[0]["role"] == "system":
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn == 0:
            return (
                "I'll split the context and ask sub-LMs.\n```repl\n"
                "words = context.split()\n"
                "parts = [' '.join(words[i:i + 1000]) for i in range(0, len(words), 1000)]\n"
                "counts = llm_query_batched([f'COUNT WORDS: {p}' for p in parts])\n"
                "print(counts)\n```"
            )
        return "```repl\nanswer['content'] = str(sum(int(c) for c in counts))\nanswer['ready'] = True\n```"
    prompt = messages[-1]["content"]
    assert prompt.startswith("COUNT WORDS: ")
    return str(len(prompt.removeprefix("COUNT WORDS: ").split()))


def test_rlms_script_with_only_the_import_changed(tmp_path: Any) -> None:
    script = tmp_path / "script.py"
    script.write_text(RLMS_SCRIPT.replace("from rlm import RLM", "from rlm_core import RLM"))
    with LMServer(reply=server_script) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        proc = subprocess.run(
            [sys.executable, str(script), server.base_url],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["response"] == "6000"
        assert out["root_model"] == "gpt-4o-mini"
        # The server reports usage; every request is counted once, per model.
        usage = out["usage"]["model_usage_summaries"]["gpt-4o-mini"]
        assert usage["total_calls"] == len(server.requests)
        assert usage["total_input_tokens"] == sum(
            sum(len(m["content"]) for m in r.body["messages"]) // 4 for r in server.requests
        )
        paths = {r.path for r in server.requests}
        assert paths == {"/v1/chat/completions"}


def test_openai_backend_end_to_end_with_retries_and_exact_usage(openai_server: LMServer) -> None:
    openai_server.reply = server_script
    openai_server.fail_next(429, 503)
    rlm = RLM(
        backend="openai",
        backend_kwargs={
            "model_name": "m1",
            "base_url": openai_server.base_url,
            "api_key": "test-key",
            "retry_backoff": 0.01,
        },
        max_concurrent_subcalls=8,
    )
    result = rlm.completion("one two three " * 4000)
    assert result.response == "12000"
    usage = result.usage_summary.model_usage_summaries["m1"]
    # Two requests were refused (429, 503) and retried; only answered calls are counted.
    answered = openai_server.requests[2:]
    assert usage.total_calls == len(answered) == 2 + 12
    assert usage.total_input_tokens == sum(
        sum(len(m["content"]) for m in r.body["messages"]) // 4 for r in answered
    )
    assert openai_server.requests[0].headers["authorization"] == "Bearer test-key"


def test_a_failing_root_lm_is_a_typed_error(openai_server: LMServer) -> None:
    openai_server.fail_next(401)
    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "m", "base_url": openai_server.base_url, "api_key": "bad"},
    )
    try:
        rlm.completion("c")
    except BackendError as exc:
        assert "401" in str(exc)
    else:
        raise AssertionError("expected BackendError")
