"""``anthropic``: Claude models through the Anthropic Messages API.

The ``anthropic`` SDK is imported when the backend is created, not when this module is
imported (``pip install 'rlm-core[anthropic]'``). The SDK's own retries are turned off;
calls are retried here on HTTP 408/429/5xx (including 529 "overloaded"), connection errors
and timeouts.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from rlm_core.backends.base import (
    DEFAULT_TIMEOUT,
    Backend,
    LMResponse,
    LMUsage,
    resolve_api_key,
    with_retries,
)
from rlm_core.backends.context_limits import context_limit as lookup_context_limit
from rlm_core.backends.openai import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    UsageWarning,
    accepted_params,
    check_retry_settings,
    describe_error,
    import_sdk,
    is_transient,
    merge_extra_body,
    split_known,
)
from rlm_core.exceptions import BackendError
from rlm_core.types import Messages

if TYPE_CHECKING:
    from anthropic import Anthropic

DEFAULT_MAX_TOKENS = 32768
"""``max_tokens`` of every request unless configured (as in ``rlms``)."""


def split_system(messages: Messages) -> tuple[Messages, str | list[dict[str, Any]] | None]:
    """Pull system messages out of ``messages`` (Anthropic takes them as ``system=``).

    Several system messages are joined with blank lines; if any has content parts instead of
    a string, the system prompt is returned as a list of content blocks.
    """
    rest: Messages = []
    system: list[Any] = []
    for message in messages:
        if message.get("role") == "system":
            if message.get("content"):
                system.append(message["content"])
        else:
            rest.append(message)
    if not system:
        return rest, None
    if all(isinstance(part, str) for part in system):
        return rest, "\n\n".join(system)
    blocks: list[dict[str, Any]] = []
    for part in system:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif isinstance(part, list):
            blocks.extend(part)
        else:
            blocks.append(part)
    return rest, blocks


class AnthropicBackend(Backend):
    """Anthropic's Messages API.

    ``backend_kwargs``:

    * ``model_name``: the model used when a call names none.
    * ``api_key``: default ``ANTHROPIC_API_KEY`` (not needed with ``auth_token`` or
      ``ANTHROPIC_AUTH_TOKEN``).
    * ``max_tokens``: reply token cap of each request (default 32768, as ``rlms``).
    * ``base_url``: the API address (default: the SDK's, which honours
      ``ANTHROPIC_BASE_URL``).
    * ``sampling_args``: extra arguments of every request (``temperature``, ``top_p``,
      ``max_tokens``, ``extra_body``, ...).
    * ``timeout`` (seconds per attempt), ``max_retries`` (default 3), ``retry_backoff``
      (seconds before the first retry, default 0.5).
    * anything else (``default_headers``, ...) is passed to ``anthropic.Anthropic``.
    """

    name = "anthropic"

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        base_url: str | None = None,
        sampling_args: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(
            model_name=model_name, sampling_args=sampling_args, timeout=timeout, **client_kwargs
        )
        check_retry_settings(max_retries, retry_backoff)
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_tokens = max_tokens
        self._default_model = model_name
        self._warn_no_usage = UsageWarning()
        sdk = import_sdk("anthropic", self.name)
        self._status_error: type[BaseException] = sdk.APIStatusError
        self._connection_error: type[BaseException] = sdk.APIConnectionError
        self._api_error: type[BaseException] = sdk.AnthropicError
        key = resolve_api_key(
            api_key,
            ("ANTHROPIC_API_KEY",),
            self.name,
            required=not (
                client_kwargs.get("auth_token") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
            ),
        )
        kwargs: dict[str, Any] = {**client_kwargs, "timeout": timeout, "max_retries": 0}
        if key:
            kwargs["api_key"] = key
        if base_url:
            kwargs["base_url"] = base_url
        try:
            client: Anthropic = sdk.Anthropic(**kwargs)
        except TypeError as exc:
            raise BackendError(f"backend 'anthropic': unsupported backend_kwargs: {exc}") from exc
        except self._api_error as exc:
            raise BackendError(f"backend 'anthropic': {exc}") from exc
        self._client = client
        self.base_url: str = str(client.base_url)
        """The URL requests go to (as the SDK resolved it)."""
        self._create_params = accepted_params(client.messages.create)

    def _is_retryable(self, exc: BaseException) -> bool:
        return is_transient(exc, self._status_error, self._connection_error)

    def complete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Send ``messages`` to ``model`` (default ``model_name``), retrying transient errors."""
        used_model = model or self._default_model
        if not used_model:
            raise BackendError(
                "backend 'anthropic' needs a model: pass backend_kwargs={'model_name': ...}"
            )
        chat, system = split_system(messages)
        sampling = {
            k: v for k, v in self.sampling_args.items() if v is not None and k != "extra_body"
        }
        known, unknown = split_known(sampling, self._create_params)
        request: dict[str, Any] = {
            "model": used_model,
            "max_tokens": self.max_tokens,
            "messages": chat,
            **known,
        }
        if system is not None:
            request["system"] = system
        extra_body = merge_extra_body(unknown, self.sampling_args)
        if extra_body:
            request["extra_body"] = extra_body
        where = f"{self.name} ({self.base_url}, model {used_model!r})"

        def call() -> Any:
            return self._client.messages.create(**request)

        try:
            response = with_retries(
                call,
                is_retryable=self._is_retryable,
                max_retries=self.max_retries,
                backoff=self.retry_backoff,
            )
        except BackendError as exc:  # retries used up
            last = exc.__cause__ or exc
            raise BackendError(
                f"{where}: gave up after {self.max_retries + 1} attempts; last error: "
                f"{describe_error(last, self._status_error, self.timeout)}"
            ) from last
        except json.JSONDecodeError as exc:
            raise BackendError(f"{where}: the reply body is not valid JSON ({exc})") from exc
        except TypeError as exc:
            raise BackendError(
                f"{where}: the SDK rejected the request arguments ({exc}); check sampling_args"
            ) from exc
        except self._api_error as exc:
            raise BackendError(
                f"{where}: {describe_error(exc, self._status_error, self.timeout)}"
            ) from exc
        return self._parse(response, used_model, where)

    def _parse(self, response: Any, model: str, where: str) -> LMResponse:
        content = getattr(response, "content", None)
        if not isinstance(content, list):
            raise BackendError(f"{where}: malformed reply: no `content` list")
        texts = [
            str(getattr(block, "text", "") or "")
            for block in content
            if getattr(block, "type", None) == "text"
        ]
        if not texts:
            stop = getattr(response, "stop_reason", None)
            raise BackendError(f"{where}: the reply has no text content (stop_reason={stop!r})")
        usage = getattr(response, "usage", None)
        if usage is None:
            self._warn_no_usage(where)
            tokens = LMUsage(0, 0, None)
        else:
            tokens = LMUsage(
                int(getattr(usage, "input_tokens", 0) or 0),
                int(getattr(usage, "output_tokens", 0) or 0),
                None,
            )
        return LMResponse("".join(texts), model, tokens)

    def context_limit(self, model: str | None = None) -> int | None:
        """The context window of ``model`` (default ``model_name``) when it is a known model."""
        return lookup_context_limit(model or self._default_model)

    def close(self) -> None:
        """Close the SDK's HTTP connection pool."""
        self._client.close()
