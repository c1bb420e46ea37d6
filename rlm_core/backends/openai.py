"""OpenAI chat-completions backends: ``openai`` and the OpenAI-compatible presets.

* ``openai``: the OpenAI API, or any OpenAI-compatible server through ``base_url``.
* ``openrouter``, ``vercel``: gateways with their own default ``base_url`` and key variable.
* ``vllm``: a vLLM (or other self-hosted) server; ``base_url`` is required.
* ``azure_openai``: Azure OpenAI through ``openai.AzureOpenAI``.

The ``openai`` SDK is imported when a backend is created, not when this module is imported
(``pip install 'rlm-core[openai]'``). The SDK's own retries are turned off; calls are retried
here on HTTP 408/429/5xx, connection errors and timeouts, with exponential backoff.
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from rlm_core.backends.base import LMResponse, LMUsage, resolve_api_key
from rlm_core.backends.sdk import SDKBackend
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


def extract_cost(usage: Any) -> float | None:
    """USD cost of a call when the provider reports one (OpenRouter does), else ``None``.

    Reads ``usage.cost``, then ``usage.model_extra["cost"]``, then
    ``usage.model_extra["cost_details"]["upstream_inference_cost"]``; zero means unknown.
    """
    candidates: list[Any] = [getattr(usage, "cost", None)]
    extra = getattr(usage, "model_extra", None)
    if isinstance(extra, dict):
        candidates.append(extra.get("cost"))
        details = extra.get("cost_details")
        if isinstance(details, dict):
            candidates.append(details.get("upstream_inference_cost"))
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            str(p.get("text") or "") if isinstance(p, dict) else str(getattr(p, "text", "") or "")
            for p in content
        )
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

    def _parse(self, response: Any, model: str, where: str) -> LMResponse:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"{where}: malformed reply: no `choices` ({_preview(response)})")
        message = getattr(choices[0], "message", None)
        if message is None:
            raise BackendError(f"{where}: malformed reply: `choices[0]` has no `message`")
        content = getattr(message, "content", None)
        if content is None:
            refusal = getattr(message, "refusal", None)
            if not refusal:
                finish = getattr(choices[0], "finish_reason", None)
                raise BackendError(f"{where}: the reply has no content (finish_reason={finish!r})")
            content = refusal
        usage = getattr(response, "usage", None)
        if usage is None:
            self._warn_no_usage(where)
            return LMResponse(_message_text(content), model, LMUsage(0, 0, None))
        return LMResponse(
            _message_text(content),
            model,
            LMUsage(
                int(getattr(usage, "prompt_tokens", 0) or 0),
                int(getattr(usage, "completion_tokens", 0) or 0),
                extract_cost(usage),
            ),
        )


def _preview(obj: Any, limit: int = 200) -> str:
    try:
        dump = obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else obj
        text = json.dumps(dump, default=str)
    except Exception:
        text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "..."


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
