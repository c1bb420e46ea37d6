"""The OpenAI backends' direct transport (``transport="direct"``) against the local server.

Which path served a request is read off the wire: the SDK's HTTP client (httpx) asks for
compressed replies (``Accept-Encoding: gzip, ...``), the direct transport for
``Accept-Encoding: identity``.
"""

from __future__ import annotations

import ssl
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from lm_server import LMServer, RecordedRequest, expected_usage
from test_backends import ENV_VARS, MESSAGES, backend_factory, run_in_threads

from rlm_core import RLM
from rlm_core.backends.base import LMResponse, LMUsage
from rlm_core.backends.http_transport import sdk_ssl_context
from rlm_core.backends.openai import AzureOpenAIBackend, OpenAIBackend, OpenRouterBackend
from rlm_core.bridge.tls import make_tls_material
from rlm_core.exceptions import BackendError

pytestmark = pytest.mark.timeout(60)

TRANSPORT_HEADERS = frozenset(
    {"host", "content-length", "accept-encoding", "connection"}
    | {"x-stainless-retry-count", "x-stainless-read-timeout"}
)
"""Headers each HTTP stack sets itself, and the SDK's per-request retry/timeout telemetry."""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, endpoints or proxies from the developer's environment."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


backends = contextmanager(backend_factory)
"""``with backends(cls, **defaults) as make:``: :func:`backend_factory` as a context manager."""


@pytest.fixture
def make_direct(openai_server: LMServer) -> Iterator[Any]:
    """Build direct-transport ``OpenAIBackend``s pointed at the local server."""
    yield from backend_factory(
        OpenAIBackend,
        base_url=openai_server.base_url,
        api_key="test-key",
        model_name="gpt-test",
        transport="direct",
    )


@pytest.fixture
def make_local(openai_server: LMServer) -> Iterator[Any]:
    """Build ``OpenAIBackend``s (default transport) pointed at the local server."""
    yield from backend_factory(
        OpenAIBackend, base_url=openai_server.base_url, api_key="k", model_name="m"
    )


@pytest.fixture
def tls_contexts(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLContext]:
    """Every :class:`ssl.SSLContext` created from now on, in order.

    The SDK's HTTP client creates one (and loads the CA certificates into it) when it is
    made, even for ``http://`` URLs; a client that only holds settings creates none.
    """
    made: list[ssl.SSLContext] = []
    create = ssl.SSLContext.__new__

    def recorded(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = create(cls, *args, **kwargs)
        made.append(context)
        return context

    monkeypatch.setattr(ssl.SSLContext, "__new__", staticmethod(recorded))
    return made


def used_sdk(request: RecordedRequest) -> bool:
    """Whether the SDK (rather than the direct transport) sent ``request``."""
    return request.headers.get("accept-encoding") != "identity"


def wait_for(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll ``condition`` until it holds (``limit`` seconds at most)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- the same request as the SDK ---------------------------------------------------------------

PARITY_CONFIGS = {
    "full": {
        "organization": "org-1",
        "project": "proj-1",
        "default_headers": {"X-Test": "yes"},
        "default_query": {"tag": "t1", "tags": ["a", "b"]},
        "sampling_args": {
            "temperature": 0.25,
            "max_tokens": 77,
            "seed": None,
            "stop": ["END"],
            "min_p": 0.05,
            "extra_body": {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1},
        },
    },
    "header overrides": {
        "default_headers": {"Authorization": "Bearer other", "User-Agent": "mine/1.0"},
        "sampling_args": {"max_tokens": 5},
    },
}


@pytest.mark.parametrize("config", PARITY_CONFIGS.values(), ids=PARITY_CONFIGS.keys())
def test_direct_sends_what_the_sdk_sends(openai_server: LMServer, config: dict[str, Any]) -> None:
    messages = [*MESSAGES, {"role": "user", "content": "Grüße, ünïcode ✓"}]
    with backends(OpenAIBackend, base_url=openai_server.base_url, model_name="gpt-test") as make:
        for transport in ("sdk", "direct"):
            make(api_key="test-key", transport=transport, **config).complete(messages)
    sdk, direct = openai_server.requests
    assert used_sdk(sdk)
    assert not used_sdk(direct)
    assert direct.body == sdk.body
    assert direct.body["messages"] == messages
    assert (direct.path, direct.query) == (sdk.path, sdk.query)

    def comparable(request: RecordedRequest) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k not in TRANSPORT_HEADERS}

    assert comparable(direct) == comparable(sdk)
    assert {"authorization", "user-agent", "content-type"} <= comparable(direct).keys()
    assert int(direct.headers["content-length"]) > 0


def test_direct_body_merges_extra_body_at_top_level(
    openai_server: LMServer, make_direct: Any
) -> None:
    make_direct(
        sampling_args={"temperature": 0.5, "max_tokens": 9, "extra_body": {"temperature": 0.1}}
    ).complete(MESSAGES)
    body = openai_server.bodies[-1]
    assert body == {
        "model": "gpt-test",
        "messages": MESSAGES,
        "temperature": 0.1,
        "max_completion_tokens": 9,
    }


# -- connections -------------------------------------------------------------------------------


def test_one_connection_serves_sequential_calls_from_any_thread(
    openai_server: LMServer, make_direct: Any
) -> None:
    backend = make_direct()
    for _ in range(3):
        backend.complete(MESSAGES)
    for _ in range(2):
        thread = threading.Thread(target=backend.complete, args=(MESSAGES,))
        thread.start()
        thread.join(timeout=10)
    assert openai_server.request_count == 5
    assert openai_server.connections_opened == 1


def test_server_closing_idle_connections_is_not_an_error(
    openai_server: LMServer, make_direct: Any
) -> None:
    backend = make_direct(max_retries=0)  # a failed attempt would raise
    backend.complete(MESSAGES)
    assert openai_server.drop_connections() == 1
    wait_for(lambda: openai_server.open_connections == 0, "the server to close the connection")
    response = backend.complete(MESSAGES)
    assert response.text == "echo: What is the capital of France?"
    assert openai_server.request_count == 2  # the stale connection carried no request
    assert openai_server.connections_opened == 2


def test_reused_connection_closed_without_a_reply_is_resent_once(
    openai_server: LMServer, make_direct: Any
) -> None:
    backend = make_direct(max_retries=0)
    backend.complete(MESSAGES)
    openai_server.fail_next("disconnect")
    assert backend.complete(MESSAGES).text.startswith("echo:")
    assert openai_server.request_count == 3
    assert openai_server.connections_opened == 2


def test_new_connection_closed_without_a_reply_is_an_attempt(
    openai_server: LMServer, make_direct: Any
) -> None:
    openai_server.fail_next("disconnect")
    with pytest.raises(BackendError, match="HTTPConnectionError") as info:
        make_direct(max_retries=0).complete(MESSAGES)
    assert "RemoteDisconnected" in str(info.value)
    assert openai_server.request_count == 1


def test_timeout_on_a_kept_alive_connection_is_retried_not_resent(
    openai_server: LMServer, make_direct: Any
) -> None:
    backend = make_direct(timeout=0.3, max_retries=1)
    backend.complete(MESSAGES)
    openai_server.latency = 1.0
    with pytest.raises(BackendError) as info:
        backend.complete(MESSAGES)
    message = str(info.value)
    assert "gave up after 2 attempts" in message
    assert "timed out (timeout=0.3s)" in message
    assert openai_server.request_count == 3


def test_64_concurrent_calls_from_new_threads_reuse_connections(
    openai_server: LMServer, make_direct: Any
) -> None:
    openai_server.latency = 0.05
    openai_server.cost = 0.001
    backend = make_direct()
    n = 64
    prompts = [[{"role": "user", "content": f"prompt {i}: " + "x" * (5 * i)}] for i in range(n)]
    for _ in range(2):  # a second batch of new threads finds the first batch's connections
        results = run_in_threads(backend, prompts)
        for prompt, result in zip(prompts, results, strict=True):
            assert isinstance(result, LMResponse), result
            text = "echo: " + prompt[0]["content"]
            assert result == LMResponse(
                text, "gpt-test", LMUsage(*expected_usage(prompt, text), 0.001)
            )
    assert openai_server.request_count == 2 * n
    assert openai_server.max_concurrent >= 2
    assert openai_server.connections_opened <= n


def test_close_from_another_thread_ends_a_call_in_flight(
    openai_server: LMServer, make_direct: Any
) -> None:
    openai_server.latency = 30.0
    backend = make_direct()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            backend.complete(MESSAGES)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: openai_server.in_flight == 1, "the request to reach the server")
    backend.close()
    thread.join(timeout=20)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, BackendError)
    assert "transport is closed" in str(error)
    assert openai_server.request_count == 1


def test_close_closes_idle_connections(openai_server: LMServer, make_direct: Any) -> None:
    backend = make_direct()
    backend.complete(MESSAGES)
    assert openai_server.open_connections == 1
    backend.close()
    wait_for(lambda: openai_server.open_connections == 0, "the connection to close")
    assert backend._client.is_closed()
    with pytest.raises(BackendError, match="transport is closed"):
        backend.complete(MESSAGES)
    assert openai_server.request_count == 1


# -- HTTPS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LMServer, Path]]:
    """An HTTPS :class:`LMServer` with a self-signed certificate, and that certificate."""
    material = make_tls_material(("127.0.0.1",))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(material.certificate)
    key.write_bytes(material.private_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with LMServer(ssl_context=context) as server:
        yield server, cert


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_https_trusts_what_the_sdk_trusts(
    tls_server: tuple[LMServer, Path], monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    server, cert = tls_server
    with backends(
        OpenAIBackend, base_url=server.base_url, model_name="m", transport=transport, max_retries=0
    ) as make:
        with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED"):
            make().complete(MESSAGES)
        assert server.request_count == 0
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by the SDK's HTTP library
        assert make().complete(MESSAGES).text == "echo: What is the capital of France?"
    assert used_sdk(server.requests[-1]) == (transport == "sdk")


def test_tls_settings_fall_back_to_a_verifying_context() -> None:
    for sdk in (openai, types.ModuleType("sdk_without_http_library")):
        context = sdk_ssl_context(sdk)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname


def test_direct_transports_share_their_tls_settings(
    tls_server: tuple[LMServer, Path],
    monkeypatch: pytest.MonkeyPatch,
    tls_contexts: list[ssl.SSLContext],
) -> None:
    server, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with backends(OpenAIBackend, base_url=server.base_url, model_name="m") as make:
        for _ in range(3):
            assert make().complete(MESSAGES).text == "echo: What is the capital of France?"
    assert len(tls_contexts) == 1  # made by the first backend, used by all three
    assert not any(used_sdk(request) for request in server.requests)


# -- the SDK's HTTP client -----------------------------------------------------------------------


def test_direct_transport_never_builds_the_sdk_http_client(
    openai_server: LMServer, make_local: Any, tls_contexts: list[ssl.SSLContext]
) -> None:
    backend = make_local()
    assert backend.transport == "direct"
    backend.complete(MESSAGES)
    assert not used_sdk(openai_server.requests[-1])
    assert tls_contexts == []
    backend.close()
    assert tls_contexts == []


def test_sdk_transport_builds_a_client_that_sends(
    openai_server: LMServer, make_local: Any, tls_contexts: list[ssl.SSLContext]
) -> None:
    chosen = make_local(transport="sdk")
    fallback = make_local(sampling_args={"extra_headers": {"X-Per-Call": "1"}})  # auto
    for backend in (chosen, fallback):
        assert backend.transport == "sdk"
        assert backend.complete(MESSAGES).text == "echo: What is the capital of France?"
        assert used_sdk(openai_server.requests[-1])
    assert openai_server.requests[-1].headers["x-per-call"] == "1"
    assert len(tls_contexts) >= 2  # each backend's SDK HTTP client has its own


def test_new_rlm_on_the_openai_backend_never_builds_the_sdk_http_client(
    openai_server: LMServer, tls_contexts: list[ssl.SSLContext]
) -> None:
    openai_server.reply = lambda body: (
        "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
    )
    kwargs = {"base_url": openai_server.base_url, "api_key": "k", "model_name": "m"}
    for _ in range(2):
        rlm = RLM(backend="openai", backend_kwargs=kwargs, environment="local")
        try:
            assert rlm.completion("hello").response == "done"
        finally:
            rlm.close()
    assert openai_server.request_count == 2
    assert not any(used_sdk(request) for request in openai_server.requests)
    assert tls_contexts == []


# -- choosing the transport ----------------------------------------------------------------------


def test_auto_is_direct_for_the_openai_compatible_backends(openai_server: LMServer) -> None:
    with backends(OpenRouterBackend, base_url=openai_server.base_url, api_key="k") as make:
        backend = make(model_name="m")
        assert backend.transport == "direct"
        backend.complete(MESSAGES)
    assert not used_sdk(openai_server.requests[-1])


def test_transport_sdk_uses_the_sdk(openai_server: LMServer, make_local: Any) -> None:
    backend = make_local(transport="sdk")
    assert backend.transport == "sdk"
    backend.complete(MESSAGES)
    assert used_sdk(openai_server.requests[-1])


def test_http_client_falls_back_to_the_sdk(openai_server: LMServer, make_local: Any) -> None:
    seen: list[Any] = []
    with openai.DefaultHttpxClient(event_hooks={"request": [seen.append]}) as http_client:
        backend = make_local(http_client=http_client)
        assert backend.transport == "sdk"
        backend.complete(MESSAGES)
    assert len(seen) == 1
    assert used_sdk(openai_server.requests[-1])


def test_sdk_only_settings_fall_back_to_the_sdk(openai_server: LMServer, make_local: Any) -> None:
    key_provider = make_local(api_key=lambda: "from-provider")
    per_call_headers = make_local(sampling_args={"extra_headers": {"X-Per-Call": "1"}})
    for backend in (key_provider, per_call_headers):
        assert backend.transport == "sdk"
        backend.complete(MESSAGES)
    first, second = openai_server.requests
    assert used_sdk(first) and used_sdk(second)
    assert first.headers["authorization"] == "Bearer from-provider"
    assert second.headers["x-per-call"] == "1"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_proxy_variables_fall_back_to_the_sdk(
    openai_server: LMServer, make_local: Any, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    with LMServer() as proxy:  # answers proxied requests itself, so it can count them
        monkeypatch.setenv(variable, proxy.url)
        auto, direct = make_local(), make_local(transport="direct")
        assert (auto.transport, direct.transport) == ("sdk", "direct")
        auto.complete(MESSAGES)
        direct.complete(MESSAGES)
        [proxied] = proxy.requests
    assert used_sdk(proxied)
    assert proxied.path == "/v1/chat/completions"
    [unproxied] = openai_server.requests  # transport="direct" ignores proxy variables
    assert not used_sdk(unproxied)


@pytest.mark.parametrize(
    "env",
    [
        {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"},
        {"http_proxy": "http://127.0.0.1:9", "no_proxy": "localhost,127.0.0.1"},
        {"HTTPS_PROXY": "http://127.0.0.1:9"},  # does not cover http:// URLs
    ],
)
def test_proxy_variables_that_do_not_cover_the_url_keep_direct(
    openai_server: LMServer, make_local: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    backend = make_local()
    assert backend.transport == "direct"
    backend.complete(MESSAGES)
    assert not used_sdk(openai_server.requests[-1])


def test_unknown_transport_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="transport must be 'auto', 'direct' or 'sdk'"):
        OpenAIBackend(api_key="k", base_url="http://127.0.0.1:9/v1", transport="fast")


def test_direct_refuses_what_it_cannot_honour() -> None:
    url = "http://127.0.0.1:9/v1"
    with (
        openai.DefaultHttpxClient() as http_client,
        pytest.raises(BackendError, match=r"'http_client'.*transport='sdk'"),
    ):
        OpenAIBackend(api_key="k", base_url=url, http_client=http_client, transport="direct")
    with pytest.raises(BackendError, match="sampling_args 'timeout'"):
        OpenAIBackend(api_key="k", base_url=url, sampling_args={"timeout": 5}, transport="direct")


def test_azure_uses_the_sdk(openai_server: LMServer) -> None:
    with backends(AzureOpenAIBackend, api_key="az-key", azure_endpoint=openai_server.url) as make:
        backend = make(azure_deployment="dep")
        assert backend.transport == "sdk"
        backend.complete(MESSAGES)
        with pytest.raises(BackendError, match="backend 'azure_openai'"):
            make(azure_deployment="dep", transport="direct")
    assert used_sdk(openai_server.requests[-1])
