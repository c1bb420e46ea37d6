"""``gemini``: Google's Gemini models through the Gemini API's ``generateContent`` method.

Requests go straight to ``POST {base_url}/{api_version}/models/{model}:generateContent``
over kept-alive :mod:`http.client` connections
(:class:`~rlm_core.backends.http_transport.JSONTransport`), with the key in the
``x-goog-api-key`` header, as the ``google-genai`` SDK sends them; no SDK is needed. Calls
are retried on HTTP 408/429/5xx, connection errors and timeouts, waiting at least as long as
a 429's ``google.rpc.RetryInfo`` asks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from rlm_core.backends.anthropic import split_system
from rlm_core.backends.base import DEFAULT_TIMEOUT, LMResponse, LMUsage, resolve_api_key
from rlm_core.backends.http_transport import HTTPStatusError, JSONTransport, shared_ssl_context
from rlm_core.backends.sdk import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    DIRECT_ERRORS,
    ErrorTypes,
    RemoteBackend,
    preview,
)
from rlm_core.exceptions import BackendError
from rlm_core.types import Messages

DEFAULT_MODEL = "gemini-2.5-flash"
"""The model of calls that name none when ``model_name`` is not given (as ``rlms``)."""

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
API_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
"""Environment variables read for the key, in order."""
BASE_URL_VAR = "GOOGLE_GEMINI_BASE_URL"
"""Environment variable read for ``base_url`` (as the ``google-genai`` SDK)."""

SAMPLING_RENAMES = {
    "max_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "stop": "stopSequences",
}
"""``sampling_args`` names of other APIs and their ``generationConfig`` field."""

REQUEST_FIELDS = frozenset({"safetySettings", "cachedContent", "tools", "toolConfig"})
"""``sampling_args`` (after camel-casing) sent beside ``generationConfig``, not inside it."""

_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


def camel_case(name: str) -> str:
    """``max_output_tokens`` -> ``maxOutputTokens`` (camel-cased names are kept)."""
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def request_fields(sampling_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request fields ``sampling_args`` make, besides ``contents``.

    Names are camel-cased (``top_p`` -> ``topP``; ``max_tokens`` -> ``maxOutputTokens``,
    ``stop`` -> ``stopSequences``, with a string made a list), ``None`` values dropped, and
    the keys of a ``thinking_config`` mapping camel-cased too. :data:`REQUEST_FIELDS` go
    beside ``generationConfig``, the rest inside it; ``extra_body`` is merged into the
    request last (its keys win).
    """
    config: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    extra_body: Mapping[str, Any] = {}
    for key, value in (sampling_args or {}).items():
        if key == "extra_body":
            extra_body = value or {}
            continue
        if value is None:
            continue
        name = SAMPLING_RENAMES.get(key) or camel_case(key)
        if name == "stopSequences" and isinstance(value, str):
            value = [value]
        if name == "thinkingConfig" and isinstance(value, Mapping):
            value = {camel_case(k): v for k, v in value.items()}
        (fields if name in REQUEST_FIELDS else config)[name] = value
    if config:
        fields["generationConfig"] = config
    fields.update(extra_body)
    return fields


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [
            {"text": str(part.get("text") or "")} if isinstance(part, dict) else {"text": str(part)}
            for part in content
        ]
    return [{"text": "" if content is None else str(content)}]


def to_contents(messages: Messages) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Chat messages as Gemini ``contents`` and ``systemInstruction``.

    System messages become the system instruction (several are joined with blank lines);
    ``assistant`` turns get the role ``model``, every other role ``user`` (as ``rlms``).
    """
    chat, system = split_system(messages)
    contents = [
        {
            "role": "model" if m.get("role") == "assistant" else "user",
            "parts": _parts(m.get("content")),
        }
        for m in chat
    ]
    return contents, None if system is None else {"parts": _parts(system)}


def gemini_usage(metadata: Mapping[str, Any]) -> LMUsage:
    """A ``usageMetadata`` object as :class:`LMUsage`.

    ``input_tokens`` = ``promptTokenCount`` (which includes the cached tokens) +
    ``toolUsePromptTokenCount``; ``output_tokens`` = ``candidatesTokenCount`` +
    ``thoughtsTokenCount`` (thinking is billed as output); ``cached_input_tokens`` =
    ``cachedContentTokenCount``.
    """

    def count(name: str) -> int:
        return int(metadata.get(name) or 0)

    return LMUsage(
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        output_tokens=count("candidatesTokenCount") + count("thoughtsTokenCount"),
        cached_input_tokens=count("cachedContentTokenCount"),
    )


def google_error(exc: BaseException) -> tuple[str, str, str] | None:
    """``(status, message, reason)`` of a Google API error body (``None``: not one)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    details = error.get("details")
    reasons = [
        str(d.get("reason"))
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("reason")
    ]
    return str(error.get("status") or ""), str(error.get("message") or ""), ",".join(reasons)


class GeminiBackend(RemoteBackend):
    """The Gemini API (Google AI Studio keys).

    ``backend_kwargs``:

    * ``model_name``: the model used when a call names none (default ``gemini-2.5-flash``,
      as ``rlms``); ``models/...`` and ``tunedModels/...`` names are accepted.
    * ``api_key``: default ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``; required unless
      ``base_url`` points elsewhere than Google.
    * ``base_url``: default ``GOOGLE_GEMINI_BASE_URL``, else
      ``https://generativelanguage.googleapis.com``; ``api_version``: default ``v1beta``.
    * ``sampling_args``: ``generationConfig`` fields of every request (``temperature``,
      ``top_p``, ``max_tokens``, ``thinking_config``, ...; see :func:`request_fields`).
    * ``timeout`` (seconds per attempt), ``max_retries`` (default 3), ``retry_backoff``
      (seconds before the first retry, default 0.5), ``default_headers`` (sent with every
      request).
    """

    name = "gemini"
    honours_retry_after = True

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        base_url: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        sampling_args: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        default_headers: Mapping[str, str] | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise BackendError(
                f"backend {self.name!r}: unsupported backend_kwargs: {', '.join(sorted(unknown))}"
            )
        super().__init__(model_name, sampling_args, timeout, max_retries, retry_backoff)
        url = base_url or os.environ.get(BASE_URL_VAR) or DEFAULT_BASE_URL
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"backend {self.name!r}: base_url must be an http(s) URL: {url!r}")
        root = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        key = resolve_api_key(api_key, API_KEY_VARS, self.name, required=root == DEFAULT_BASE_URL)
        self.base_url = f"{root}/{api_version}"
        self._path = f"{parts.path.rstrip('/')}/{api_version}"
        self._errors = DIRECT_ERRORS
        self._fields = request_fields(self.sampling_args)
        headers = {"Content-Type": "application/json", "User-Agent": "rlm-core"}
        if key:
            headers["x-goog-api-key"] = key.strip()
        headers.update(default_headers or {})
        context = shared_ssl_context() if parts.scheme == "https" else None
        self._transport = JSONTransport(self.base_url, headers, timeout, context)

    def _fallback_model(self) -> str | None:
        return DEFAULT_MODEL

    @classmethod
    def configured_model(cls, backend_kwargs: Mapping[str, Any]) -> str | None:
        """``model_name``, else ``gemini-2.5-flash``."""
        return super().configured_model(backend_kwargs) or DEFAULT_MODEL

    # -- calls -------------------------------------------------------------------------------

    def _request(self, model: str, messages: Messages) -> dict[str, Any]:
        contents, system = to_contents(messages)
        body: dict[str, Any] = {"contents": contents}
        if system is not None:
            body["systemInstruction"] = system
        body.update(self._fields)
        name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        path = f"{self._path}/{quote(name, safe='/')}:generateContent"
        return {"path": path, "body": body}

    def _send(self, request: dict[str, Any], where: str) -> Any:
        return self._call(lambda: self._transport.post(request["body"], request["path"]), where)

    def _describe(self, exc: BaseException, kinds: ErrorTypes) -> str:
        """``HTTP 429 RESOURCE_EXHAUSTED: <message>``; a refused key says which to check."""
        error = google_error(exc)
        if error is None or not isinstance(exc, HTTPStatusError):
            return super()._describe(exc, kinds)
        status, message, reason = error
        text = f"HTTP {exc.status_code}{f' {status}' if status else ''}: {message}"
        if exc.status_code in (401, 403) or set(reason.split(",")) & _AUTH_REASONS:
            text += f" (the API key was refused: check {' / '.join(API_KEY_VARS)} or api_key)"
        return text

    def _parse(self, response: Any, model: str, where: str) -> LMResponse:
        if not isinstance(response, dict):
            raise BackendError(f"{where}: malformed reply: not a JSON object ({preview(response)})")
        candidates = response.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = response.get("promptFeedback")
            reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
            if reason:
                raise BackendError(f"{where}: the prompt was blocked (blockReason={reason!r})")
            raise BackendError(f"{where}: malformed reply: no `candidates` ({preview(response)})")
        candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        texts = [
            part["text"]
            for part in (parts if isinstance(parts, list) else [])
            if isinstance(part, dict)
            and isinstance(part.get("text"), str)
            and not part.get("thought")
        ]
        if not texts:
            finish = candidate.get("finishReason")
            raise BackendError(f"{where}: the reply has no text (finishReason={finish!r})")
        metadata = response.get("usageMetadata")
        if not isinstance(metadata, dict):
            self._warn_no_usage(where)
            return LMResponse("".join(texts), model, LMUsage(0, 0, None))
        return LMResponse("".join(texts), model, gemini_usage(metadata))

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._transport.close()
