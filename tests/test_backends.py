"""The real LM backends, exercised over loopback against the local test server.

No test talks to any address but 127.0.0.1: presets whose default host is remote are only
constructed and inspected, or pointed at the local server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from lm_server import LMServer, expected_usage

from rlm_core.backends.anthropic import AnthropicBackend, split_system
from rlm_core.backends.base import Backend, LMResponse, LMUsage
from rlm_core.backends.context_limits import context_limit
from rlm_core.backends.openai import (
    AzureOpenAIBackend,
    OpenAIBackend,
    OpenRouterBackend,
    VercelBackend,
    VLLMBackend,
)
from rlm_core.exceptions import BackendError, MissingAPIKeyError
from rlm_core.plugins import get_registry

pytestmark = pytest.mark.timeout(60)

ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENROUTER_API_KEY",
    "AI_GATEWAY_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_AD_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    *(f"{scheme}_PROXY" for scheme in ("HTTP", "HTTPS", "ALL", "NO")),
    *(f"{scheme}_proxy" for scheme in ("http", "https", "all", "no")),
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never pick up real credentials or endpoints from the developer's environment."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def backend_factory(cls: type[Backend], **defaults: Any) -> Iterator[Any]:
    """Yield ``make(**kwargs)`` building ``cls`` with ``defaults`` (fast retries); every
    backend it made is closed afterwards."""
    made: list[Backend] = []

    def make(**kwargs: Any) -> Backend:
        backend = cls(**{"retry_backoff": 0.01, **defaults, **kwargs})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture(params=["direct", "sdk"])
def make_openai(openai_server: LMServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build ``OpenAIBackend``s pointed at the local server, once per transport; all are
    closed afterwards."""
    yield from backend_factory(
        OpenAIBackend,
        base_url=openai_server.base_url,
        api_key="test-key",
        model_name="gpt-test",
        transport=request.param,
    )


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- openai: normal calls ----------------------------------------------------------------------


def test_call_returns_text_and_exact_usage(openai_server: LMServer, make_openai: Any) -> None:
    backend = make_openai()
    response = backend.complete(MESSAGES)
    reply = "echo: What is the capital of France?"
    assert response == LMResponse(reply, "gpt-test", LMUsage(*expected_usage(MESSAGES, reply)))
    assert response.usage.input_tokens == (14 + 30) // 4
    [request] = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == "gpt-test"
    assert request.body["messages"] == MESSAGES


def test_model_per_call_and_string_prompt(openai_server: LMServer, make_openai: Any) -> None:
    backend = make_openai()
    response = backend.complete([{"role": "user", "content": "hi"}], model="other-model")
    assert response.model == "other-model"
    assert openai_server.bodies[-1]["model"] == "other-model"
    assert backend.completion("plain string") == "echo: plain string"


def test_missing_model_is_a_clear_error(make_openai: Any) -> None:
    backend = make_openai(model_name=None)
    with pytest.raises(BackendError, match="needs a model"):
        backend.complete(MESSAGES)


def test_acomplete(make_openai: Any) -> None:
    backend = make_openai()
    response = asyncio.run(backend.acomplete([{"role": "user", "content": "async"}]))
    assert response.text == "echo: async"


@pytest.mark.parametrize("style", ["cost", "upstream"])
def test_cost_is_read_like_openrouter_sends_it(
    openai_server: LMServer, make_openai: Any, style: Any
) -> None:
    openai_server.cost = 0.0125
    openai_server.cost_style = style
    response = make_openai().complete(MESSAGES)
    assert response.usage.cost == pytest.approx(0.0125)


def test_no_cost_field_means_unknown_cost(make_openai: Any) -> None:
    assert make_openai().complete(MESSAGES).usage.cost is None


def test_sampling_args_reach_the_request_body(openai_server: LMServer, make_openai: Any) -> None:
    backend = make_openai(
        sampling_args={
            "temperature": 0.25,
            "max_tokens": 77,
            "seed": None,
            "extra_body": {"top_k": 5, "repetition_penalty": 1.1},
        }
    )
    backend.complete(MESSAGES)
    body = openai_server.bodies[-1]
    assert body["temperature"] == 0.25
    assert body["max_completion_tokens"] == 77
    assert "max_tokens" not in body
    assert "seed" not in body
    assert "extra_body" not in body
    assert body["top_k"] == 5
    assert body["repetition_penalty"] == 1.1


def test_sampling_args_the_sdk_does_not_know_still_reach_the_body(
    openai_server: LMServer, make_openai: Any
) -> None:
    backend = make_openai(sampling_args={"min_p": 0.05, "extra_body": {"min_p": 0.1}})
    backend.complete(MESSAGES)
    assert openai_server.bodies[-1]["min_p"] == 0.1  # extra_body wins


def test_client_kwargs_are_passed_to_the_sdk(openai_server: LMServer, make_openai: Any) -> None:
    backend = make_openai(default_headers={"X-Test": "yes"}, default_query={"tag": "t1"})
    backend.complete(MESSAGES)
    request = openai_server.requests[-1]
    assert request.headers["x-test"] == "yes"
    assert request.query["tag"] == ["t1"]


def test_unknown_backend_kwarg_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unsupported backend_kwargs"):
        OpenAIBackend(api_key="k", base_url="http://127.0.0.1:9/v1", no_such_option=True)


@pytest.mark.parametrize(("max_retries", "backoff"), [(-1, 0.5), (2, -1.0)])
def test_bad_retry_settings_are_rejected(max_retries: int, backoff: float) -> None:
    with pytest.raises(BackendError):
        OpenAIBackend(
            api_key="k",
            base_url="http://127.0.0.1:9/v1",
            max_retries=max_retries,
            retry_backoff=backoff,
        )


# -- openai: retries and failures --------------------------------------------------------------


def test_retries_429_and_500_then_succeeds(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next(429, 500)
    response = make_openai(max_retries=3).complete(MESSAGES)
    assert response.text == "echo: What is the capital of France?"
    assert openai_server.request_count == 3
    # Only the successful attempt's usage is reported.
    assert response.usage == LMUsage(*expected_usage(MESSAGES, response.text))


@pytest.mark.parametrize("status", [408, 502, 503, 529])
def test_other_transient_statuses_are_retried(
    openai_server: LMServer, make_openai: Any, status: int
) -> None:
    openai_server.fail_next(status)
    make_openai().complete(MESSAGES)
    assert openai_server.request_count == 2


def test_gives_up_after_max_retries(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next(500, 500, 500, 500)
    with pytest.raises(BackendError) as info:
        make_openai(max_retries=2).complete(MESSAGES)
    assert openai_server.request_count == 3
    message = str(info.value)
    assert "gave up after 3 attempts" in message
    assert "HTTP 500" in message
    assert "forced HTTP 500 from the test server" in message
    assert "\n" not in message


def test_max_retries_zero_tries_once(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next(429)
    with pytest.raises(BackendError, match="HTTP 429"):
        make_openai(max_retries=0).complete(MESSAGES)
    assert openai_server.request_count == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(
    openai_server: LMServer, make_openai: Any, status: int
) -> None:
    openai_server.fail_next(status)
    with pytest.raises(BackendError) as info:
        make_openai(max_retries=3).complete(MESSAGES)
    assert openai_server.request_count == 1
    assert f"HTTP {status}" in str(info.value)
    assert f"forced HTTP {status} from the test server" in str(info.value)
    assert not isinstance(info.value, MissingAPIKeyError)


def test_connection_refused_is_retried_then_fails(make_openai: Any) -> None:
    backend = make_openai(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=2)
    with pytest.raises(BackendError, match="gave up after 3 attempts") as info:
        backend.complete(MESSAGES)
    assert "Connection" in str(info.value)


def test_dropped_connection_is_retried(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next("disconnect")
    assert make_openai().complete(MESSAGES).text.startswith("echo:")
    assert openai_server.request_count == 2


def test_timeout_is_retried_then_fails(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.latency = 1.0
    with pytest.raises(BackendError, match="timed out") as info:
        make_openai(timeout=0.2, max_retries=1).complete(MESSAGES)
    assert "gave up after 2 attempts" in str(info.value)
    assert openai_server.request_count == 2


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("malformed", "no `choices`"),
        ("null_content", "no content"),
        ("garbage", "not valid JSON"),
    ],
)
def test_malformed_replies_are_backend_errors(
    openai_server: LMServer, make_openai: Any, mode: str, match: str
) -> None:
    openai_server.fail_next(mode)
    with pytest.raises(BackendError, match=match):
        make_openai().complete(MESSAGES)
    assert openai_server.request_count == 1


def test_refusal_is_returned_as_text(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next("refusal")
    assert make_openai().complete(MESSAGES).text == "I can't help with that."


def test_content_parts_are_joined(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.fail_next("content_parts")
    response = make_openai().complete(MESSAGES)
    reply = "echo: What is the capital of France?"
    assert response == LMResponse(reply, "gpt-test", LMUsage(*expected_usage(MESSAGES, reply)))


def test_missing_usage_records_zero_and_warns_once(
    openai_server: LMServer, make_openai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.fail_next("no_usage", "no_usage")
    backend = make_openai()
    with caplog.at_level(logging.WARNING, logger="rlm_core.backends.openai"):
        first = backend.complete(MESSAGES)
        second = backend.complete(MESSAGES)
    assert first.text == "echo: What is the capital of France?"
    assert first.usage == second.usage == LMUsage(0, 0, None)
    warnings = [r for r in caplog.records if "no token usage" in r.getMessage()]
    assert len(warnings) == 1
    # Replies with usage are counted normally afterwards.
    assert backend.complete(MESSAGES).usage.input_tokens > 0


# -- openai: keys, base URLs and presets -------------------------------------------------------


def test_missing_openai_key_is_one_clear_line() -> None:
    with pytest.raises(MissingAPIKeyError) as info:
        OpenAIBackend(model_name="gpt-4o")
    message = str(info.value)
    assert "OPENAI_API_KEY" in message
    assert "\n" not in message
    assert isinstance(info.value, BackendError)


def test_explicit_openai_base_url_still_needs_a_key() -> None:
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIBackend(base_url="https://api.openai.com/v1")


def test_key_from_environment(openai_server: LMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    backend = OpenAIBackend(model_name="m", retry_backoff=0.01)
    try:
        assert backend.base_url == openai_server.base_url + "/"
        backend.complete(MESSAGES)
    finally:
        backend.close()
    assert openai_server.requests[-1].headers["authorization"] == "Bearer env-key"


def test_custom_base_url_needs_no_key(openai_server: LMServer) -> None:
    backend = OpenAIBackend(model_name="m", base_url=openai_server.base_url)
    try:
        backend.complete(MESSAGES)
    finally:
        backend.close()
    assert openai_server.requests[-1].headers["authorization"] == "Bearer EMPTY"


def test_openai_pointed_at_openrouter_reads_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError, match="OPENROUTER_API_KEY"):
        OpenAIBackend(base_url="https://openrouter.ai/api/v1")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-key")
    backend = OpenAIBackend(base_url="https://openrouter.ai/api/v1")
    assert backend._client.api_key == "or-key"
    backend.close()


@pytest.mark.parametrize(
    ("name", "cls", "url", "key_var"),
    [
        ("openai", OpenAIBackend, "https://api.openai.com/v1/", "OPENAI_API_KEY"),
        ("openrouter", OpenRouterBackend, "https://openrouter.ai/api/v1/", "OPENROUTER_API_KEY"),
        ("vercel", VercelBackend, "https://ai-gateway.vercel.sh/v1/", "AI_GATEWAY_API_KEY"),
    ],
)
def test_preset_defaults(
    monkeypatch: pytest.MonkeyPatch, name: str, cls: type[OpenAIBackend], url: str, key_var: str
) -> None:
    factory = get_registry().backend(name).factory
    assert factory is cls
    with pytest.raises(MissingAPIKeyError) as info:
        factory(model_name="some/model")
    assert key_var in str(info.value)
    assert "\n" not in str(info.value)
    monkeypatch.setenv(key_var, f"{name}-key")
    backend = factory(model_name="some/model")
    try:
        assert backend.base_url == url
        assert backend._client.api_key == f"{name}-key"
        assert backend.name == name
    finally:
        backend.close()


def test_preset_ignores_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    backend = OpenRouterBackend(api_key="k")
    assert backend.base_url == "https://openrouter.ai/api/v1/"
    backend.close()


def test_preset_against_the_local_server(
    openai_server: LMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-key")
    openai_server.cost = 0.002
    openai_server.fail_next(429)
    backend = OpenRouterBackend(
        model_name="openai/gpt-4o", base_url=openai_server.base_url, retry_backoff=0.01
    )
    try:
        response = backend.complete(MESSAGES)
    finally:
        backend.close()
    assert response.usage.cost == pytest.approx(0.002)
    assert openai_server.request_count == 2
    assert openai_server.requests[-1].headers["authorization"] == "Bearer or-key"
    assert backend.context_limit() == 128_000


def test_vllm_requires_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # not used by vllm
    with pytest.raises(BackendError, match="base_url") as info:
        get_registry().backend("vllm").factory(model_name="m")
    assert not isinstance(info.value, MissingAPIKeyError)


def test_vllm_needs_no_key(openai_server: LMServer) -> None:
    backend = VLLMBackend(model_name="Qwen/Qwen3-8B", base_url=openai_server.base_url)
    try:
        assert backend.complete(MESSAGES).text == "echo: What is the capital of France?"
        assert backend.context_limit() == 32_768
    finally:
        backend.close()
    assert openai_server.requests[-1].headers["authorization"] == "Bearer EMPTY"


def test_azure_requires_endpoint() -> None:
    with pytest.raises(BackendError, match="AZURE_OPENAI_ENDPOINT"):
        get_registry().backend("azure_openai").factory(api_key="k", model_name="gpt-4o")


def test_azure_requires_key() -> None:
    with pytest.raises(MissingAPIKeyError, match="AZURE_OPENAI_API_KEY"):
        AzureOpenAIBackend(azure_endpoint="http://127.0.0.1:9", azure_deployment="d")


def test_azure_against_the_local_server(openai_server: LMServer) -> None:
    backend = AzureOpenAIBackend(
        api_key="az-key", azure_endpoint=openai_server.url, azure_deployment="my-dep"
    )
    try:
        assert backend.model_name == "my-dep"
        assert backend.base_url == f"{openai_server.url}/openai/deployments/my-dep/"
        response = backend.complete(MESSAGES)
    finally:
        backend.close()
    assert response.model == "my-dep"
    assert response.usage == LMUsage(*expected_usage(MESSAGES, response.text))
    request = openai_server.requests[-1]
    assert request.path == "/openai/deployments/my-dep/chat/completions"
    assert request.query["api-version"] == ["2024-02-01"]
    assert request.headers["api-key"] == "az-key"


def test_azure_reads_its_environment(
    openai_server: LMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", openai_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-az")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2025-01-01-preview")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "env-dep")
    backend = AzureOpenAIBackend(retry_backoff=0.01)
    try:
        backend.complete(MESSAGES)
    finally:
        backend.close()
    request = openai_server.requests[-1]
    assert request.path == "/openai/deployments/env-dep/chat/completions"
    assert request.query["api-version"] == ["2025-01-01-preview"]
    assert request.headers["api-key"] == "env-az"


def test_context_limits() -> None:
    assert context_limit("gpt-4o") == 128_000
    assert context_limit("openai/gpt-4o-mini-2024-07-18") == 128_000
    assert context_limit("gpt-4") == 8_192
    assert context_limit("GPT-4-32K") == 32_768
    assert context_limit("claude-3-5-sonnet-20241022") == 200_000
    assert context_limit("my-local-model") is None
    assert context_limit(None) is None
    backend = OpenAIBackend(api_key="k", model_name="gpt-4o", base_url="http://127.0.0.1:9/v1")
    assert backend.context_limit() == 128_000
    assert backend.context_limit("gpt-5") == 272_000
    backend.close()


def test_close_closes_the_http_client(make_openai: Any) -> None:
    backend = make_openai()
    backend.close()
    assert backend._client.is_closed()


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(BackendError, match=r"pip install 'rlm-core\[openai\]'"):
        OpenAIBackend(api_key="k")
    with pytest.raises(BackendError, match=r"pip install 'rlm-core\[anthropic\]'"):
        AnthropicBackend(api_key="k")


# -- concurrency -------------------------------------------------------------------------------


def run_in_threads(backend: Any, prompts: list[Any]) -> list[LMResponse | BaseException]:
    """``backend.complete(prompt)`` for every prompt, each in its own new thread, at once."""
    results: list[LMResponse | BaseException] = [RuntimeError("not run")] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = backend.complete(prompts[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_calls_get_their_own_usage(openai_server: LMServer, make_openai: Any) -> None:
    openai_server.latency = 0.05
    openai_server.cost = 0.001
    backend = make_openai()
    n = 32
    prompts = [[{"role": "user", "content": f"prompt {i}: " + "x" * (7 * i)}] for i in range(n)]
    results = run_in_threads(backend, prompts)
    for i, result in enumerate(results):
        assert isinstance(result, LMResponse), result
        expected_text = "echo: " + prompts[i][0]["content"]
        assert result.text == expected_text
        assert result.usage == LMUsage(*expected_usage(prompts[i], expected_text), 0.001)
    assert openai_server.request_count == n
    assert openai_server.max_concurrent >= 2


# -- anthropic ---------------------------------------------------------------------------------


@pytest.fixture
def make_anthropic(anthropic_server: LMServer) -> Iterator[Any]:
    """Build ``AnthropicBackend``s pointed at the local server; closed afterwards."""
    yield from backend_factory(
        AnthropicBackend, base_url=anthropic_server.url, api_key="ant-key", model_name="claude-test"
    )


def test_anthropic_call_extracts_system_and_reports_usage(
    anthropic_server: LMServer, make_anthropic: Any
) -> None:
    backend = make_anthropic()
    response = backend.complete(MESSAGES)
    reply = "echo: What is the capital of France?"
    # The server counts the system prompt with the messages, so usage matches OpenAI's.
    assert response == LMResponse(reply, "claude-test", LMUsage(*expected_usage(MESSAGES, reply)))
    [request] = anthropic_server.requests
    assert request.path == "/v1/messages"
    assert request.body["system"] == "You are terse."
    assert request.body["messages"] == [MESSAGES[1]]
    assert request.body["max_tokens"] == 32768
    assert request.body["model"] == "claude-test"
    auth = request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
    assert "ant-key" in auth


def test_anthropic_without_system_sends_none(
    anthropic_server: LMServer, make_anthropic: Any
) -> None:
    make_anthropic().complete([{"role": "user", "content": "hi"}])
    assert "system" not in anthropic_server.bodies[-1]


def test_split_system_joins_several_system_messages() -> None:
    rest, system = split_system(
        [
            {"role": "system", "content": "a"},
            {"role": "user", "content": "u"},
            {"role": "system", "content": "b"},
        ]
    )
    assert system == "a\n\nb"
    assert rest == [{"role": "user", "content": "u"}]


def test_anthropic_sampling_args(anthropic_server: LMServer, make_anthropic: Any) -> None:
    backend = make_anthropic(
        max_tokens=1000,
        sampling_args={
            "temperature": 0.5,
            "top_p": None,
            "max_tokens": 64,
            "stop_sequences": ["END"],
            "extra_body": {"top_k": 3},
        },
    )
    backend.complete(MESSAGES)
    body = anthropic_server.bodies[-1]
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 64
    assert body["stop_sequences"] == ["END"]
    assert body["top_k"] == 3
    assert "top_p" not in body
    assert "extra_body" not in body


def test_anthropic_retries_overloaded_then_succeeds(
    anthropic_server: LMServer, make_anthropic: Any
) -> None:
    anthropic_server.fail_next(529, 429)
    assert make_anthropic().complete(MESSAGES).text.startswith("echo:")
    assert anthropic_server.request_count == 3


def test_anthropic_client_error_not_retried(
    anthropic_server: LMServer, make_anthropic: Any
) -> None:
    anthropic_server.fail_next(400)
    with pytest.raises(BackendError, match="HTTP 400: forced HTTP 400 from the test server"):
        make_anthropic().complete(MESSAGES)
    assert anthropic_server.request_count == 1


@pytest.mark.parametrize(
    ("mode", "match"),
    [("malformed", "no `content`"), ("null_content", "no text"), ("garbage", "not valid JSON")],
)
def test_anthropic_malformed_replies(
    anthropic_server: LMServer, make_anthropic: Any, mode: str, match: str
) -> None:
    anthropic_server.fail_next(mode)
    with pytest.raises(BackendError, match=match):
        make_anthropic().complete(MESSAGES)


def test_anthropic_missing_usage(
    anthropic_server: LMServer, make_anthropic: Any, caplog: pytest.LogCaptureFixture
) -> None:
    anthropic_server.fail_next("no_usage")
    with caplog.at_level(logging.WARNING, logger="rlm_core.backends.openai"):
        response = make_anthropic().complete(MESSAGES)
    assert response.usage == LMUsage(0, 0, None)
    assert any("no token usage" in r.getMessage() for r in caplog.records)


def test_anthropic_missing_key() -> None:
    with pytest.raises(MissingAPIKeyError) as info:
        get_registry().backend("anthropic").factory(model_name="claude-sonnet-4-5")
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert "\n" not in str(info.value)


def test_anthropic_connection_refused(make_anthropic: Any) -> None:
    backend = make_anthropic(base_url=f"http://127.0.0.1:{closed_port()}", max_retries=1)
    with pytest.raises(BackendError, match="gave up after 2 attempts"):
        backend.complete(MESSAGES)


def test_anthropic_context_limit(make_anthropic: Any) -> None:
    assert make_anthropic(model_name="claude-3-5-haiku-latest").context_limit() == 200_000


# -- registration and lazy imports -------------------------------------------------------------


def test_builtin_backends_are_registered() -> None:
    names = {r.name for r in get_registry().backends()}
    assert {"openai", "openrouter", "vercel", "vllm", "azure_openai", "anthropic"} <= names


def test_importing_backends_does_not_import_sdks() -> None:
    code = (
        "import sys\n"
        "import rlm_core.backends.openai, rlm_core.backends.anthropic, rlm_core.backends.builtin\n"
        "from rlm_core.plugins import get_registry\n"
        "names = [r.name for r in get_registry().backends()]\n"
        "assert 'openai' in names and 'anthropic' in names, names\n"
        "loaded = [m for m in ('openai', 'anthropic') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
