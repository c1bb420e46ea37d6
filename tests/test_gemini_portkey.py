"""The ``gemini`` and ``portkey`` backends, over loopback against local servers that speak
Gemini's ``generateContent`` REST API and Portkey's OpenAI-compatible gateway.

No test talks to any address but 127.0.0.1: backends whose default host is remote are only
constructed and inspected.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import lm_server
import pytest
from lm_server import GEMINI_TEST_KEY, PORTKEY_TEST_KEY, LMServer, prompt_chars
from scripts import finish, repl
from test_backends import ENV_VARS, backend_factory

from rlm_core import RLM
from rlm_core.backends.base import LMResponse, LMUsage
from rlm_core.backends.context_limits import context_limit
from rlm_core.backends.gemini import GeminiBackend, request_fields
from rlm_core.backends.http_transport import HTTPStatusError
from rlm_core.backends.portkey import PortkeyBackend
from rlm_core.backends.sdk import retry_after_seconds
from rlm_core.exceptions import BackendError, MissingAPIKeyError
from rlm_core.plugins import get_registry
from rlm_core.pricing import lookup_price

pytestmark = pytest.mark.timeout(60)

gemini_server = lm_server.gemini_server
portkey_server = lm_server.portkey_server

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
REPLY = "echo: And of Italy?"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never pick up real credentials or endpoints from the developer's environment."""
    for var in (*ENV_VARS, "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("PORTKEY_API_KEY", raising=False)


@pytest.fixture
def make_gemini(gemini_server: LMServer) -> Iterator[Any]:
    """Build ``GeminiBackend``s pointed at the local server (fast retries); all are closed."""
    yield from backend_factory(GeminiBackend, base_url=gemini_server.url, api_key=GEMINI_TEST_KEY)


@pytest.fixture(params=["direct", "sdk"])
def make_portkey(portkey_server: LMServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build ``PortkeyBackend``s pointed at the local gateway, once per transport."""
    yield from backend_factory(
        PortkeyBackend,
        base_url=portkey_server.base_url,
        api_key=PORTKEY_TEST_KEY,
        provider="openai",
        model_name="@openai-prod/gpt-4o-mini",
        transport=request.param,
    )


def gap(server: LMServer) -> float:
    """Seconds between the first two requests the server received."""
    first, second = server.requests[:2]
    return second.time - first.time


# -- gemini: requests and replies -------------------------------------------------------------


def test_gemini_sends_a_generate_content_request(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    response = make_gemini().complete(MESSAGES)
    prompt = prompt_chars({"messages": MESSAGES}) // 4
    assert response == LMResponse(REPLY, "gemini-2.5-flash", LMUsage(prompt, len(REPLY) // 4))
    [request] = gemini_server.requests
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == GEMINI_TEST_KEY
    assert "key" not in request.query
    assert request.body == {
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What is the capital of France?"}]},
            {"role": "model", "parts": [{"text": "Paris."}]},
            {"role": "user", "parts": [{"text": "And of Italy?"}]},
        ],
    }


def test_gemini_sampling_args_become_generation_config(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    sampling = {
        "temperature": 0.2,
        "top_p": 0.9,
        "topK": 20,
        "max_tokens": 512,
        "stop": "END",
        "seed": None,
        "thinking_config": {"thinking_budget": 1024},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "extra_body": {"cachedContent": "cachedContents/abc"},
    }
    make_gemini(sampling_args=sampling).complete([{"role": "user", "content": "hi"}])
    body = gemini_server.requests[-1].body
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 20,
        "maxOutputTokens": 512,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert body["safetySettings"] == sampling["safety_settings"]
    assert body["cachedContent"] == "cachedContents/abc"
    assert "systemInstruction" not in body
    assert request_fields(None) == {}


def test_gemini_model_names(gemini_server: LMServer, make_gemini: Any) -> None:
    backend = make_gemini(model_name="models/gemini-2.5-pro", api_version="v1")
    assert backend.complete(MESSAGES).model == "models/gemini-2.5-pro"
    backend.complete(MESSAGES, model="gemini-2.0-flash")
    backend.complete(MESSAGES, model="tunedModels/my-tune")
    assert [r.path for r in gemini_server.requests] == [
        "/v1/models/gemini-2.5-pro:generateContent",
        "/v1/models/gemini-2.0-flash:generateContent",
        "/v1/tunedModels/my-tune:generateContent",
    ]
    assert backend.context_limit() == context_limit("gemini-2.5-pro") is not None


def test_gemini_defaults_like_rlms() -> None:
    backend = GeminiBackend(api_key="k")
    try:
        assert backend.model_name == "gemini-2.5-flash"
        assert backend.base_url == "https://generativelanguage.googleapis.com/v1beta"
    finally:
        backend.close()
    factory = get_registry().backend("gemini").factory
    assert factory is GeminiBackend
    assert GeminiBackend.configured_model({}) == "gemini-2.5-flash"
    assert GeminiBackend.configured_model({"model_name": "gemini-2.5-pro"}) == "gemini-2.5-pro"
    assert not GeminiBackend.reports_cost({})


def test_gemini_thinking_and_cached_tokens_are_counted_and_priced(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    gemini_server.cached_tokens = 5
    gemini_server.thoughts_tokens = 11
    sampling = {"thinking_config": {"include_thoughts": True}}
    response = make_gemini(sampling_args=sampling).complete(MESSAGES)
    assert response.text == REPLY  # the thought summary part is left out
    [sent] = gemini_server.usages
    assert sent["cachedContentTokenCount"] == 5 and sent["thoughtsTokenCount"] == 11
    prompt = sent["promptTokenCount"]
    output = sent["candidatesTokenCount"] + sent["thoughtsTokenCount"]
    assert response.usage == LMUsage(prompt, output, None, 5)
    flash = lookup_price("gemini-2.5-flash")
    assert flash is not None and (flash.input, flash.cached_input, flash.output) == (0.3, 0.03, 2.5)
    expected = ((prompt - 5) * 0.3 + 5 * 0.03 + output * 2.5) / 1e6
    assert flash.cost(response.usage) == pytest.approx(expected)


def test_gemini_content_parts_are_joined(gemini_server: LMServer, make_gemini: Any) -> None:
    gemini_server.fail_next("content_parts")
    assert make_gemini().complete(MESSAGES).text == REPLY


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("malformed", "malformed reply: no `candidates`"),
        ("refusal", "the prompt was blocked (blockReason='SAFETY')"),
        ("null_content", "the reply has no text (finishReason='SAFETY')"),
        ("garbage", "not valid JSON"),
    ],
)
def test_gemini_unusable_replies_are_backend_errors(
    gemini_server: LMServer,
    make_gemini: Any,
    failure: str,
    message: str,
) -> None:
    gemini_server.fail_next(failure)
    with pytest.raises(BackendError, match=re.escape(message)):
        make_gemini().complete(MESSAGES)
    assert gemini_server.request_count == 1


def test_gemini_reply_without_usage_counts_zero_and_warns_once(
    gemini_server: LMServer,
    make_gemini: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gemini_server.fail_next("no_usage", "no_usage")
    backend = make_gemini()
    with caplog.at_level(logging.WARNING, logger="rlm_core.backends.openai"):
        assert backend.complete(MESSAGES).usage == LMUsage(0, 0, None)
        backend.complete(MESSAGES)
    assert len([r for r in caplog.records if "no token usage" in r.getMessage()]) == 1


# -- gemini: keys ------------------------------------------------------------------------------


def test_gemini_key_variables(gemini_server: LMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    gemini_server.gemini_api_key = None  # any key
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_server.url)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-var")
    made = [GeminiBackend()]
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-var")
    made += [GeminiBackend(), GeminiBackend(api_key=" explicit ")]
    for backend in made:
        backend.complete(MESSAGES)
        backend.close()
    keys = [r.headers["x-goog-api-key"] for r in gemini_server.requests]
    assert keys == ["google-var", "gemini-var", "explicit"]


def test_gemini_missing_key_is_one_clear_line() -> None:
    with pytest.raises(MissingAPIKeyError) as info:
        RLM(backend="gemini").completion("c")
    assert str(info.value) == (
        "backend 'gemini' needs an API key: set GEMINI_API_KEY or GOOGLE_API_KEY or pass "
        "backend_kwargs={'api_key': ...}"
    )


def test_gemini_refused_key_is_not_retried(gemini_server: LMServer) -> None:
    backend = GeminiBackend(base_url=gemini_server.url, api_key="wrong-key", max_retries=3)
    try:
        with pytest.raises(BackendError) as info:
            backend.complete(MESSAGES)
    finally:
        backend.close()
    assert gemini_server.request_count == 1
    assert not isinstance(info.value, MissingAPIKeyError)
    assert str(info.value) == (
        f"gemini ({gemini_server.url}/v1beta, model 'gemini-2.5-flash'): HTTP 400 "
        "INVALID_ARGUMENT: API key not valid. Please pass a valid API key. (the API key was "
        "refused: check GEMINI_API_KEY / GOOGLE_API_KEY or api_key)"
    )


@pytest.mark.parametrize("status", [401, 403])
def test_gemini_auth_statuses_name_the_key(
    gemini_server: LMServer,
    make_gemini: Any,
    status: int,
) -> None:
    gemini_server.fail_next(status)
    with pytest.raises(BackendError, match=rf"HTTP {status} \w+: .*check GEMINI_API_KEY"):
        make_gemini(max_retries=3).complete(MESSAGES)
    assert gemini_server.request_count == 1


def test_gemini_without_a_key_sends_none_to_a_custom_base_url(gemini_server: LMServer) -> None:
    backend = GeminiBackend(base_url=gemini_server.url + "/", max_retries=0)
    try:
        with pytest.raises(BackendError, match="HTTP 403 PERMISSION_DENIED: Method doesn't"):
            backend.complete(MESSAGES)
    finally:
        backend.close()
    assert "x-goog-api-key" not in gemini_server.requests[0].headers


def test_gemini_unknown_backend_kwargs_are_refused() -> None:
    with pytest.raises(BackendError, match="unsupported backend_kwargs: colour, organization"):
        GeminiBackend(api_key="k", organization="o", colour="red")
    with pytest.raises(BackendError, match="base_url must be an http"):
        GeminiBackend(api_key="k", base_url="ftp://example.com")


# -- gemini: errors and retries ----------------------------------------------------------------


def test_gemini_rate_limit_waits_the_retry_delay(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    gemini_server.retry_after = 0.4
    gemini_server.fail_next(429)
    response = make_gemini(retry_backoff=0).complete(MESSAGES)
    assert response.text == REPLY
    assert gemini_server.request_count == 2
    assert gap(gemini_server) >= 0.4


def test_gemini_rate_limit_longer_than_a_minute_fails_at_once(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    gemini_server.retry_after = 3600
    gemini_server.fail_next(429)
    with pytest.raises(BackendError, match=r"HTTP 429 RESOURCE_EXHAUSTED: .*Please retry in 3600s"):
        make_gemini(max_retries=3).complete(MESSAGES)
    assert gemini_server.request_count == 1


def test_gemini_rate_limit_gives_up_after_max_retries(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    gemini_server.fail_next(429, 429, 429)
    with pytest.raises(BackendError) as info:
        make_gemini(max_retries=2).complete(MESSAGES)
    assert gemini_server.request_count == 3
    assert "gave up after 3 attempts; last error: HTTP 429 RESOURCE_EXHAUSTED" in str(info.value)


@pytest.mark.parametrize("failure", [500, 503, 504, "disconnect"])
def test_gemini_server_errors_are_retried(
    gemini_server: LMServer,
    make_gemini: Any,
    failure: int | str,
) -> None:
    gemini_server.fail_next(failure)
    assert make_gemini().complete(MESSAGES).text == REPLY
    assert gemini_server.request_count == 2


def test_gemini_context_too_long_is_not_retried(
    gemini_server: LMServer,
    make_gemini: Any,
) -> None:
    gemini_server.max_input_tokens = 5
    with pytest.raises(BackendError) as info:
        make_gemini(max_retries=3).complete(MESSAGES)
    assert gemini_server.request_count == 1
    assert "HTTP 400 INVALID_ARGUMENT: The input token count (" in str(info.value)
    assert "exceeds the maximum number of tokens allowed (5)" in str(info.value)


def test_gemini_calls_from_many_threads(gemini_server: LMServer, make_gemini: Any) -> None:
    backend = make_gemini()
    results: dict[int, LMResponse] = {}

    def call(i: int) -> None:
        results[i] = backend.complete([{"role": "user", "content": "x" * (4 * i)}])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: r.usage.input_tokens for i, r in results.items()} == {i: i for i in range(1, 17)}
    assert gemini_server.connections_opened <= 16


RETRY_INFO = {
    "error": {
        "code": 429,
        "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}],
    }
}


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"Retry-After": "7"}, None, 7.0),
        ({"retry-after-ms": "250", "retry-after": "7"}, None, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, 0.0),  # a date in the past
        ({"retry-after": "soon"}, None, None),
        ({}, RETRY_INFO, 1.5),
        ({}, {"error": {"code": 429, "message": "slow down"}}, None),
        ({}, "not json", None),
    ],
)
def test_retry_after_is_read_from_headers_then_retry_info(
    headers: dict[str, str], body: Any, seconds: float | None
) -> None:
    assert retry_after_seconds(HTTPStatusError(429, body, headers)) == seconds


# -- portkey -----------------------------------------------------------------------------------


def test_portkey_sends_portkey_headers(portkey_server: LMServer, make_portkey: Any) -> None:
    backend = make_portkey(
        trace_id="trace-1",
        metadata={"_user": "alice"},
        config={"retry": {"attempts": 2}},
        cache_force_refresh=True,
        forward_headers=["x-a", "x-b"],
        sampling_args={"temperature": 0.2, "max_tokens": 64},
    )
    portkey_server.cached_tokens = 3
    response = backend.complete(MESSAGES)
    [request] = portkey_server.requests
    headers = request.headers
    assert request.path == "/v1/chat/completions"
    assert headers["x-portkey-api-key"] == PORTKEY_TEST_KEY
    assert headers["x-portkey-provider"] == "openai"
    assert headers["x-portkey-trace-id"] == "trace-1"
    assert headers["x-portkey-metadata"] == '{"_user": "alice"}'
    assert headers["x-portkey-config"] == '{"retry": {"attempts": 2}}'
    assert headers["x-portkey-cache-force-refresh"] == "true"
    assert headers["x-portkey-forward-headers"] == "x-a,x-b"
    assert "authorization" not in headers
    assert request.body["model"] == "@openai-prod/gpt-4o-mini"
    assert request.body["max_tokens"] == 64 and request.body["temperature"] == 0.2
    [sent] = portkey_server.usages
    assert response.usage == LMUsage(sent["prompt_tokens"], sent["completion_tokens"], None, 3)


def test_portkey_provider_key_is_sent_as_authorization(
    portkey_server: LMServer,
    make_portkey: Any,
) -> None:
    make_portkey(authorization="sk-upstream").complete(MESSAGES)
    make_portkey(authorization="Bearer sk-other").complete(MESSAGES)
    sent = [r.headers["authorization"] for r in portkey_server.requests]
    assert sent == ["Bearer sk-upstream", "Bearer sk-other"]


def test_portkey_defaults_like_rlms(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError, match="set PORTKEY_API_KEY"):
        PortkeyBackend(model_name="m")
    monkeypatch.setenv("PORTKEY_API_KEY", "pk-env")
    backend = PortkeyBackend(model_name="m", virtual_key="vk")
    try:
        assert backend.base_url == "https://api.portkey.ai/v1/"
        assert backend.transport == "direct"
        assert backend.portkey_settings == {"virtual_key": "vk"}
    finally:
        backend.close()
    assert get_registry().backend("portkey").factory is PortkeyBackend
    assert not PortkeyBackend.reports_cost({})


def test_portkey_self_hosted_gateway_needs_no_key(openai_server: LMServer) -> None:
    backend = PortkeyBackend(base_url=openai_server.base_url, model_name="m", provider="openai")
    try:
        backend.complete(MESSAGES)
    finally:
        backend.close()
    headers = openai_server.requests[0].headers
    assert "x-portkey-api-key" not in headers and headers["x-portkey-provider"] == "openai"


def test_portkey_refused_key_is_not_retried(
    portkey_server: LMServer,
    make_portkey: Any,
) -> None:
    with pytest.raises(BackendError, match="HTTP 401: Invalid API Key") as info:
        make_portkey(api_key="wrong", max_retries=3).complete(MESSAGES)
    assert portkey_server.request_count == 1
    assert not isinstance(info.value, MissingAPIKeyError)


def test_portkey_request_without_a_route_is_refused(
    portkey_server: LMServer,
) -> None:
    backend = PortkeyBackend(base_url=portkey_server.base_url, api_key=PORTKEY_TEST_KEY)
    try:
        with pytest.raises(BackendError, match="HTTP 400: Either x-portkey-config or"):
            backend.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        backend.close()


def test_portkey_rate_limit_waits_retry_after(
    portkey_server: LMServer,
    make_portkey: Any,
) -> None:
    portkey_server.retry_after = 0.4
    portkey_server.fail_next(429)
    assert make_portkey(retry_backoff=0).complete(MESSAGES).text == REPLY
    assert portkey_server.request_count == 2
    assert gap(portkey_server) >= 0.4


def test_portkey_rate_limit_longer_than_a_minute_fails_at_once(
    portkey_server: LMServer,
    make_portkey: Any,
) -> None:
    portkey_server.retry_after = 120
    portkey_server.fail_next(429)
    with pytest.raises(BackendError, match="HTTP 429: forced HTTP 429"):
        make_portkey(max_retries=3).complete(MESSAGES)
    assert portkey_server.request_count == 1


@pytest.mark.parametrize("failure", [500, 502, 503, "disconnect"])
def test_portkey_server_errors_are_retried(
    portkey_server: LMServer,
    make_portkey: Any,
    failure: int | str,
) -> None:
    portkey_server.fail_next(failure)
    assert make_portkey().complete(MESSAGES).text == REPLY
    assert portkey_server.request_count == 2


# -- recursive runs with exact usage ------------------------------------------------------------


def tree_reply(body: dict[str, Any]) -> str:
    """The root's first cell calls ``llm_query``, ``llm_query_batched`` and ``rlm_query``; the
    child RLM's cell makes one ``llm_query``; sub-calls answer briefly."""
    messages = body["messages"]
    if messages[0]["role"] != "system":
        return f"sub-answer to {str(messages[-1]['content'])[:30]}"
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if not str(messages[1]["content"]).startswith("Answer the following: TOP"):
        return repl(
            "x = llm_query('from the child')\nanswer['content'] = x\nanswer['ready'] = True"
        )
    if turn == 0:
        return repl(
            "a = llm_query('first question')\n"
            "b = llm_query_batched(['batch one', 'batch two', 'batch three'])\n"
            "c = rlm_query('child task')\n"
            "print(a, b, c)"
        )
    return finish("root done")


def expected_totals(
    usages: list[dict[str, Any]],
    model: str,
    input_keys: tuple[str, ...],
    output_keys: tuple[str, ...],
    cached_key: str,
) -> tuple[int, int, int, float]:
    """Tokens and cost of every reply a server sent, as the backend must count them."""
    price = lookup_price(model)
    assert price is not None
    tokens_in = tokens_out = cached = 0
    cost = 0.0
    for usage in usages:
        flat = dict(usage)
        flat.update(usage.get("prompt_tokens_details") or {})
        call = LMUsage(
            sum(int(flat.get(k) or 0) for k in input_keys),
            sum(int(flat.get(k) or 0) for k in output_keys),
            None,
            int(flat.get(cached_key) or 0),
        )
        tokens_in += call.input_tokens
        tokens_out += call.output_tokens
        cached += call.cached_input_tokens
        cost += price.cost(call)
    return tokens_in, tokens_out, cached, cost


def run_tree(backend: str, backend_kwargs: dict[str, Any]) -> Any:
    rlm = RLM(backend=backend, backend_kwargs=backend_kwargs, max_depth=2, max_iterations=5)
    try:
        result = rlm.completion("the root context", root_prompt="TOP")
    finally:
        rlm.close()
    assert result.response == "root done"
    return result.usage_summary


def check_tree_usage(
    usage: Any, server: LMServer, model: str, totals: tuple[int, int, int, float]
) -> None:
    # Root: two turns. Depth 1: its cell's 1 + 3 sub-calls and the child's turn.
    # Depth 2: the child's sub-call.
    calls = {d: u.total_calls for d, u in usage.by_depth.items()}
    assert calls == {0: 2, 1: 5, 2: 1}
    assert server.request_count == len(server.usages) == 8
    assert list(usage.model_usage_summaries) == [model]
    tokens_in, tokens_out, cached, cost = totals
    assert cached > 0 and tokens_out > 0
    assert usage.total_input_tokens == tokens_in
    assert usage.total_output_tokens == tokens_out
    assert usage.total_cached_input_tokens == cached
    assert usage.total_cost == pytest.approx(cost, rel=1e-12)
    assert usage.cost_known


def test_recursive_gemini_run_has_exact_usage(gemini_server: LMServer) -> None:
    gemini_server.reply = tree_reply
    gemini_server.cached_tokens = 4
    gemini_server.thoughts_tokens = 9
    usage = run_tree("gemini", {"base_url": gemini_server.url, "api_key": GEMINI_TEST_KEY})
    totals = expected_totals(
        gemini_server.usages,
        "gemini-2.5-flash",
        ("promptTokenCount", "toolUsePromptTokenCount"),
        ("candidatesTokenCount", "thoughtsTokenCount"),
        "cachedContentTokenCount",
    )
    check_tree_usage(usage, gemini_server, "gemini-2.5-flash", totals)
    assert usage.total_output_tokens > 8 * 9  # thinking tokens are output


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_recursive_portkey_run_has_exact_usage(portkey_server: LMServer, transport: str) -> None:
    portkey_server.reply = tree_reply
    portkey_server.cached_tokens = 4
    model = "@openai-prod/gpt-4o-mini"
    kwargs = {
        "base_url": portkey_server.base_url,
        "api_key": PORTKEY_TEST_KEY,
        "provider": "openai",
        "model_name": model,
        "transport": transport,
    }
    usage = run_tree("portkey", kwargs)
    totals = expected_totals(
        portkey_server.usages,
        model,
        ("prompt_tokens",),
        ("completion_tokens",),
        "cached_tokens",
    )
    check_tree_usage(usage, portkey_server, model, totals)
    assert all(r.headers["x-portkey-api-key"] == PORTKEY_TEST_KEY for r in portkey_server.requests)


# -- listing --------------------------------------------------------------------------------------


def test_rlm_backends_lists_both_without_importing_sdks() -> None:
    code = (
        "import io, sys\n"
        "from rlm_core.cli import main\n"
        "out = io.StringIO()\n"
        "assert main(['backends'], stdout=out) == 0\n"
        "names = [line.split()[0] for line in out.getvalue().splitlines()[2:]]\n"
        "assert 'gemini' in names and 'portkey' in names, names\n"
        "sdks = ('openai', 'anthropic', 'google.genai', 'portkey_ai', 'httpx', 'httpx2')\n"
        "loaded = [m for m in sys.modules if any(m == s or m.startswith(s + '.') for s in sdks)]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
