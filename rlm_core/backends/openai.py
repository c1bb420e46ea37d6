"""OpenAI chat-completions backends: ``openai`` and the OpenAI-compatible presets.

* ``openai``: the OpenAI API, or any OpenAI-compatible server through ``base_url``.
* ``openrouter``, ``vercel``: gateways with their own default ``base_url`` and key variable.
* ``vllm``: a vLLM (or other self-hosted) server; ``base_url`` is required.
* ``azure_openai``: Azure OpenAI through ``openai.AzureOpenAI``.

The ``openai`` SDK is imported when a backend is created, not when this module is imported
(``pip install 'rlm-core[openai]'``); it configures the client (key, URL, headers). Requests
go either through the SDK or, by default, straight to ``POST {base_url}/chat/completions``
over kept-alive :mod:`http.client` connections (:mod:`rlm_core.backends.http_transport`),
with the headers, query and body the SDK would send: see ``transport`` in
:class:`OpenAIBackend`. The SDK's HTTP client (and its TLS settings) is only created for
the SDK transport. Either way the SDK's own retries are off; calls are retried here on
HTTP 408/429/5xx, connection errors and timeouts, with exponential backoff.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from rlm_core.backends.base import LMResponse, LMUsage, resolve_api_key
from rlm_core.backends.http_transport import JSONTransport, proxy_applies, shared_ssl_context
from rlm_core.backends.sdk import DIRECT_ERRORS, SDKBackend, preview
from rlm_core.exceptions import BackendError
from rlm_core.types import Messages

if TYPE_CHECKING:
    from openai import OpenAI

PLACEHOLDER_API_KEY = "EMPTY"
"""Sent to self-hosted servers when no key is configured (they accept any key)."""

OPENAI_HOST = "api.openai.com"

_GATEWAY_KEY_VARS: dict[str, str] = {
    OPENAI_HOST: "OPENAI_API_KEY",
    "openrouter.ai": "OPENROUTER_API_KEY",
    "ai-gateway.vercel.sh": "AI_GATEWAY_API_KEY",
}
"""Hosts whose key variable ``backend='openai'`` reads when pointed at them (as ``rlms``)."""

COST_REPORTING_HOSTS = frozenset({"openrouter.ai"})
"""Hosts whose replies carry each call's cost (read by :func:`extract_cost`)."""

TRANSPORTS = ("auto", "direct", "sdk")
"""Values of the ``transport`` backend_kwarg."""

DIRECT_CLIENT_KWARGS = frozenset({"default_headers", "default_query", "organization", "project"})
"""``openai.OpenAI`` arguments the direct transport reproduces (via the client's headers and
query); any other one (``http_client``, ...) needs the SDK."""

SDK_CALL_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout"})
"""``chat.completions.create`` arguments that are not request-body fields; in
``sampling_args`` they need the SDK."""


# -- sampling args (as rlms) -----------------------------------------------------------------


def normalize_sampling_args(sampling_args: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` from ``sampling_args``.

    ``max_tokens`` is renamed ``max_completion_tokens``, ``extra_body`` is removed (see
    :func:`~rlm_core.backends.sdk.merge_extra_body`) and ``None`` values are dropped, as
    ``rlms`` does.
    """
    args = dict(sampling_args or {})
    if "max_tokens" in args:
        args["max_completion_tokens"] = args.pop("max_tokens")
    args.pop("extra_body", None)
    return {k: v for k, v in args.items() if v is not None}


def request_body(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the SDK sends for ``chat.completions.create(**request)``.

    The arguments, with ``extra_body`` merged in at the top level (its keys win).
    """
    body = {k: v for k, v in request.items() if k != "extra_body"}
    body.update(request.get("extra_body") or {})
    return body


def reply_data(reply: Any) -> Any:
    """A reply as plain JSON data: SDK reply objects are dumped, anything else is returned."""
    dump = getattr(reply, "model_dump", None)
    if not callable(dump):
        return reply
    try:
        return dump(warnings=False)  # content parts do not match the SDK's `str` field
    except ValueError:  # pydantic 1: no serializer warnings to silence
        return dump()


def extract_cost(usage: Mapping[str, Any]) -> float | None:
    """USD cost of a call when the provider reports one (OpenRouter does), else ``None``.

    Reads ``usage["cost"]``, then ``usage["cost_details"]["upstream_inference_cost"]``; zero
    means unknown.
    """
    details = usage.get("cost_details")
    candidates = [
        usage.get("cost"),
        details.get("upstream_inference_cost") if isinstance(details, Mapping) else None,
    ]
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def extract_usage(usage: Mapping[str, Any]) -> LMUsage:
    """An OpenAI chat-completions ``usage`` object as :class:`LMUsage`.

    ``prompt_tokens`` (which include cached tokens), ``completion_tokens``,
    ``prompt_tokens_details.cached_tokens`` and the reported cost (:func:`extract_cost`).
    """
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return LMUsage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cost=extract_cost(usage),
        cached_input_tokens=int(cached or 0),
    )


def client_headers(client: Any) -> dict[str, str]:
    """The headers an ``openai`` client sends with every request.

    Its ``auth_headers`` (``Authorization``), then its ``default_headers`` (``User-Agent``,
    platform headers, ``OpenAI-Organization`` / ``OpenAI-Project``, the user's
    ``default_headers``), merged case-insensitively with later values winning; values the
    SDK marks as omitted are dropped, as the SDK does.
    """
    merged: dict[str, tuple[str, str]] = {}
    for name, value in [*client.auth_headers.items(), *client.default_headers.items()]:
        if isinstance(value, str):
            merged[name.lower()] = (name, value)
        else:
            merged.pop(name.lower(), None)
    return dict(merged.values())


def _host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content)


# -- backends --------------------------------------------------------------------------------


class OpenAIBackend(SDKBackend):
    """The OpenAI chat-completions API, or any OpenAI-compatible server.

    ``backend_kwargs``:

    * ``model_name``: the model used when a call names none.
    * ``api_key``: default ``OPENAI_API_KEY`` (required for api.openai.com). With a custom
      ``base_url`` the key is optional and ``"EMPTY"`` is sent when none is set; pointed at
      OpenRouter or the Vercel gateway, their key variables are read instead, as in ``rlms``.
    * ``base_url``: default ``OPENAI_BASE_URL``, else the OpenAI API.
    * ``sampling_args``: extra arguments of every request (``temperature``, ``max_tokens``
      (sent as ``max_completion_tokens``), ``extra_body``, ...).
    * ``timeout`` (seconds per attempt), ``max_retries`` (default 3), ``retry_backoff``
      (seconds before the first retry, default 0.5).
    * ``transport``: ``"auto"`` (default), ``"direct"`` or ``"sdk"``. ``"direct"`` sends
      requests over kept-alive :mod:`http.client` connections with the headers, query and
      body the SDK would send; ``"sdk"`` sends them through the SDK. ``"auto"`` is
      ``"direct"`` unless the SDK is needed: ``openai.OpenAI`` arguments other than
      :data:`DIRECT_CLIENT_KWARGS` (``http_client``, ...), :data:`SDK_CALL_OPTIONS` in
      ``sampling_args``, a key provider, ``azure_openai``, or a proxy variable
      (``HTTP(S)_PROXY``, ``ALL_PROXY``, unless ``NO_PROXY`` excludes the host) that covers
      ``base_url``. ``"direct"`` ignores proxy variables and rejects the other cases.
    * anything else (``default_headers``, ``default_query``, ``organization``, ...) is passed
      to ``openai.OpenAI``.
    """

    name = "openai"
    sdk_module = "openai"
    sdk_error = "OpenAIError"
    create_method = "chat.completions.create"
    default_base_url: ClassVar[str | None] = None
    """``base_url`` used when none is given (``None``: the SDK's default, the OpenAI API)."""
    base_url_env: ClassVar[str | None] = "OPENAI_BASE_URL"
    """Environment variable read for ``base_url`` when none is given."""
    requires_base_url: ClassVar[bool] = False
    direct_capable: ClassVar[bool] = True
    """Whether the direct transport can serve this backend's client."""

    def __init__(self, *args: Any, transport: str = "auto", **kwargs: Any) -> None:
        if transport not in TRANSPORTS:
            raise BackendError(
                f"backend {self.name!r}: transport must be 'auto', 'direct' or 'sdk', "
                f"not {transport!r}"
            )
        self._requested_transport = transport
        super().__init__(*args, **kwargs)
        self.transport: str = self._pick_transport(transport)
        """The request path in use: ``"direct"`` or ``"sdk"``."""
        self._direct = self._make_direct() if self.transport == "direct" else None
        if self._direct is None and self._settings_only():  # the SDK sends after all
            self._client.close()
            self._client = self._new_client(sends=True)

    # -- transport ---------------------------------------------------------------------------

    def _settings_only(self) -> bool:
        """Whether the direct transport may serve this configuration, so the first SDK client
        only holds the settings (it is replaced by one that sends when the SDK is chosen)."""
        return (
            self._requested_transport != "sdk"
            and self.direct_capable
            and set(self.kwargs) <= DIRECT_CLIENT_KWARGS
        )

    def _direct_blockers(self) -> list[str]:
        """What the direct transport cannot reproduce in this configuration (empty: nothing).

        The backend itself (``azure_openai``), a ``base_url`` that is not http(s),
        ``openai.OpenAI`` arguments beyond :data:`DIRECT_CLIENT_KWARGS` (``http_client``,
        ...), :data:`SDK_CALL_OPTIONS` in ``sampling_args``, an API key that is not a fixed
        string (a key provider), a ``timeout`` that is not a number of seconds.
        """
        blockers = [] if self.direct_capable else [f"backend {self.name!r}"]
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            blockers.append(f"base_url {self.base_url!r}")
        blockers += [
            f"backend_kwargs {k!r}" for k in sorted(set(self.kwargs) - DIRECT_CLIENT_KWARGS)
        ]
        blockers += [
            f"sampling_args {k!r}" for k in sorted(SDK_CALL_OPTIONS & set(self.sampling_args))
        ]
        if not self._client.auth_headers:
            blockers.append("an API key that is not a fixed string")
        if self.timeout is not None and not isinstance(self.timeout, int | float):
            blockers.append(f"timeout={self.timeout!r}")
        return blockers

    def _pick_transport(self, requested: str) -> str:
        if requested == "sdk":
            return "sdk"
        blockers = self._direct_blockers()
        if requested == "direct" and blockers:
            self._client.close()
            raise BackendError(
                f"backend {self.name!r}: transport='direct' cannot serve "
                f"{', '.join(blockers)}; use transport='sdk'"
            )
        if blockers or (requested == "auto" and proxy_applies(self.base_url)):
            return "sdk"
        return "direct"

    def _make_direct(self) -> JSONTransport:
        url = self.base_url.rstrip("/") + "/chat/completions"
        query = self._client.qs.stringify(self._client.default_query)
        if query:
            url += f"?{query}"
        context = shared_ssl_context(self._sdk) if urlsplit(url).scheme == "https" else None
        return JSONTransport(url, client_headers(self._client), self.timeout, context)

    # -- configuration hooks (overridden by the presets) -------------------------------------

    def _resolve_base_url(self, base_url: str | None) -> str | None:
        if base_url:
            return base_url
        if self.base_url_env and os.environ.get(self.base_url_env):
            return os.environ[self.base_url_env]
        if self.requires_base_url:
            raise BackendError(
                f"backend {self.name!r} needs the server address: pass "
                f"backend_kwargs={{'base_url': 'http://host:8000/v1'}}"
            )
        return self.default_base_url

    @classmethod
    def reports_cost(cls, backend_kwargs: Mapping[str, Any]) -> bool:
        """Whether the server is one that reports each call's cost (OpenRouter)."""
        url = backend_kwargs.get("base_url")
        if not url and cls.base_url_env:
            url = os.environ.get(cls.base_url_env)
        return _host(url or cls.default_base_url) in COST_REPORTING_HOSTS

    def _key_policy(self, base_url: str | None) -> tuple[tuple[str, ...], bool]:
        """Environment variables to read for the API key, and whether a key is required."""
        host = _host(base_url)
        if base_url is None or host == OPENAI_HOST:
            return ("OPENAI_API_KEY",), True
        if host in _GATEWAY_KEY_VARS:
            return (_GATEWAY_KEY_VARS[host],), True
        return ("OPENAI_API_KEY",), False

    def _resolve_key(self, api_key: str | None, base_url: str | None) -> str:
        env_vars, required = self._key_policy(base_url)
        key = resolve_api_key(api_key, env_vars, self.name, required=required)
        return key or PLACEHOLDER_API_KEY

    def _create_client(
        self, sdk: ModuleType, api_key: str | None, base_url: str | None, kwargs: dict[str, Any]
    ) -> OpenAI:
        url = self._resolve_base_url(base_url)
        key = self._resolve_key(api_key, url)
        client: OpenAI = self._make_client(sdk.OpenAI, api_key=key, base_url=url, **kwargs)
        return client

    # -- calls -------------------------------------------------------------------------------

    def _request(self, model: str, messages: Messages) -> dict[str, Any]:
        return self._with_sampling(
            normalize_sampling_args(self.sampling_args), model=model, messages=messages
        )

    def _send(self, request: dict[str, Any], where: str) -> Any:
        direct = self._direct
        if direct is None:
            return super()._send(request, where)
        body = request_body(request)
        return self._call(lambda: direct.post(body), where, DIRECT_ERRORS)

    def _parse(self, response: Any, model: str, where: str) -> LMResponse:
        data = reply_data(response)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"{where}: malformed reply: no `choices` ({preview(data)})")
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        if not isinstance(message, dict):
            raise BackendError(f"{where}: malformed reply: `choices[0]` has no `message`")
        content = message.get("content")
        if content is None:
            content = message.get("refusal")
            if not content:
                finish = choice.get("finish_reason")
                raise BackendError(f"{where}: the reply has no content (finish_reason={finish!r})")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            self._warn_no_usage(where)
            return LMResponse(_message_text(content), model, LMUsage(0, 0, None))
        return LMResponse(_message_text(content), model, extract_usage(usage))

    def close(self) -> None:
        """Close the direct transport's connections and the SDK's HTTP connection pool."""
        if self._direct is not None:
            self._direct.close()
        super().close()


class _GatewayBackend(OpenAIBackend):
    """An OpenAI-compatible gateway with a fixed default URL and its own key variable."""

    api_key_var: ClassVar[str]
    base_url_env = None

    def _key_policy(self, base_url: str | None) -> tuple[tuple[str, ...], bool]:
        return (self.api_key_var,), True


class OpenRouterBackend(_GatewayBackend):
    """OpenRouter (``https://openrouter.ai/api/v1``); key ``OPENROUTER_API_KEY``.

    Accepts the ``openai`` backend's ``backend_kwargs``; OpenRouter reports each call's cost.
    """

    name = "openrouter"
    default_base_url = "https://openrouter.ai/api/v1"
    api_key_var = "OPENROUTER_API_KEY"


class VercelBackend(_GatewayBackend):
    """Vercel AI Gateway (``https://ai-gateway.vercel.sh/v1``); key ``AI_GATEWAY_API_KEY``.

    Accepts the ``openai`` backend's ``backend_kwargs``.
    """

    name = "vercel"
    default_base_url = "https://ai-gateway.vercel.sh/v1"
    api_key_var = "AI_GATEWAY_API_KEY"


class VLLMBackend(OpenAIBackend):
    """A vLLM (or any self-hosted OpenAI-compatible) server; ``base_url`` is required.

    The key is optional: ``api_key``, else ``OPENAI_API_KEY``, else ``"EMPTY"``.
    """

    name = "vllm"
    base_url_env = None
    requires_base_url = True

    def _key_policy(self, base_url: str | None) -> tuple[tuple[str, ...], bool]:
        return ("OPENAI_API_KEY",), False


class AzureOpenAIBackend(OpenAIBackend):
    """Azure OpenAI through ``openai.AzureOpenAI``.

    ``backend_kwargs`` (besides ``model_name``, ``sampling_args``, ``timeout``,
    ``max_retries``, ``retry_backoff`` and SDK pass-through arguments):

    * ``azure_endpoint``: default ``AZURE_OPENAI_ENDPOINT`` (required).
    * ``api_version``: default ``AZURE_OPENAI_API_VERSION``, else ``"2024-02-01"``.
    * ``azure_deployment``: default ``AZURE_OPENAI_DEPLOYMENT``; also the default model.
    * ``api_key``: default ``AZURE_OPENAI_API_KEY`` (not needed with ``azure_ad_token`` or
      ``azure_ad_token_provider``).
    """

    name = "azure_openai"
    base_url_env = None
    direct_capable = False  # token providers and Azure's own headers need the SDK
    DEFAULT_API_VERSION: ClassVar[str] = "2024-02-01"

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        azure_deployment: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.azure_endpoint = azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not self.azure_endpoint:
            raise BackendError(
                "backend 'azure_openai' needs an endpoint: set AZURE_OPENAI_ENDPOINT or pass "
                "backend_kwargs={'azure_endpoint': 'https://<resource>.openai.azure.com'}"
            )
        self.api_version = (
            api_version or os.environ.get("AZURE_OPENAI_API_VERSION") or self.DEFAULT_API_VERSION
        )
        self.azure_deployment = azure_deployment or os.environ.get("AZURE_OPENAI_DEPLOYMENT")
        super().__init__(api_key=api_key, model_name=model_name, **kwargs)

    def _fallback_model(self) -> str | None:
        return self.azure_deployment

    @classmethod
    def configured_model(cls, backend_kwargs: Mapping[str, Any]) -> str | None:
        """``model_name``, else the deployment (``azure_deployment`` or
        ``AZURE_OPENAI_DEPLOYMENT``)."""
        deployment = backend_kwargs.get("azure_deployment") or os.environ.get(
            "AZURE_OPENAI_DEPLOYMENT"
        )
        return super().configured_model(backend_kwargs) or deployment or None

    def _create_client(
        self, sdk: ModuleType, api_key: str | None, base_url: str | None, kwargs: dict[str, Any]
    ) -> OpenAI:
        token_auth = any(kwargs.get(k) for k in ("azure_ad_token", "azure_ad_token_provider"))
        token_auth = token_auth or bool(os.environ.get("AZURE_OPENAI_AD_TOKEN"))
        key = resolve_api_key(
            api_key, ("AZURE_OPENAI_API_KEY",), self.name, required=not token_auth
        )
        if base_url:
            raise BackendError(
                "backend 'azure_openai' takes azure_endpoint (and azure_deployment), not base_url"
            )
        client: OpenAI = self._make_client(
            sdk.AzureOpenAI,
            api_key=key,
            azure_endpoint=self.azure_endpoint,
            api_version=self.api_version,
            azure_deployment=self.azure_deployment,
            **kwargs,
        )
        return client
