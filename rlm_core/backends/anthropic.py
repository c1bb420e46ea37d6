"""``anthropic``: Claude models through the Anthropic Messages API.

The ``anthropic`` SDK is imported when the backend is created, not when this module is
imported (``pip install 'rlm-core[anthropic]'``). The SDK's own retries are turned off;
calls are retried here on HTTP 408/429/5xx (including 529 "overloaded"), connection errors
and timeouts.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rlm_core.backends.base import DEFAULT_TIMEOUT, LMResponse, LMUsage, resolve_api_key
from rlm_core.backends.sdk import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BACKOFF, SDKBackend
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


class AnthropicBackend(SDKBackend):
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
    sdk_module = "anthropic"
    sdk_error = "AnthropicError"
    create_method = "messages.create"

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
        self.max_tokens = max_tokens
        super().__init__(
            api_key,
            model_name,
            base_url,
            sampling_args,
            timeout,
            max_retries,
            retry_backoff,
            **client_kwargs,
        )

    def _create_client(
        self, sdk: ModuleType, api_key: str | None, base_url: str | None, kwargs: dict[str, Any]
    ) -> Anthropic:
        key = resolve_api_key(
            api_key,
            ("ANTHROPIC_API_KEY",),
            self.name,
            required=not (kwargs.get("auth_token") or os.environ.get("ANTHROPIC_AUTH_TOKEN")),
        )
        if key:
            kwargs["api_key"] = key
        if base_url:
            kwargs["base_url"] = base_url
        client: Anthropic = self._make_client(sdk.Anthropic, **kwargs)
        return client

    def _request(self, model: str, messages: Messages) -> dict[str, Any]:
        chat, system = split_system(messages)
        sampling = {
            k: v for k, v in self.sampling_args.items() if v is not None and k != "extra_body"
        }
        request = self._with_sampling(
            sampling, model=model, max_tokens=self.max_tokens, messages=chat
        )
        if system is not None:
            request["system"] = system
        return request

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
            tokens = anthropic_usage(usage)
        return LMResponse("".join(texts), model, tokens)


def anthropic_usage(usage: Any) -> LMUsage:
    """A Messages API ``usage`` object as :class:`LMUsage`.

    Anthropic's ``input_tokens`` leave out the prompt tokens read from the cache
    (``cache_read_input_tokens``) and written to it (``cache_creation_input_tokens``);
    :class:`LMUsage` counts them in ``input_tokens`` and also as ``cached_input_tokens``
    and ``cache_write_tokens``.
    """

    def count(name: str) -> int:
        return int(getattr(usage, name, 0) or 0)

    read = count("cache_read_input_tokens")
    written = count("cache_creation_input_tokens")
    return LMUsage(
        input_tokens=count("input_tokens") + read + written,
        output_tokens=count("output_tokens"),
        cached_input_tokens=read,
        cache_write_tokens=written,
    )
