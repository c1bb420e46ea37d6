"""The LM backend interface every backend plugin implements."""

from __future__ import annotations

import asyncio
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from rlm_core.exceptions import BackendError, MissingAPIKeyError
from rlm_core.types import Messages, Prompt

DEFAULT_TIMEOUT = 300.0
"""Seconds one LM API call may take."""

MAX_RETRY_AFTER = 60.0
"""Longest wait in seconds a server may ask for before a retry (longer: the call fails)."""

T = TypeVar("T")


@dataclass(frozen=True)
class LMUsage:
    """Tokens (and cost in USD, when the provider reports it) of one LM call.

    ``input_tokens`` counts every prompt token, including ``cached_input_tokens`` (read
    from the provider's prompt cache) and ``cache_write_tokens`` (written to it), which
    are billed at their own rates.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class LMResponse:
    """One LM call's reply text, the model that produced it and what it cost.

    Usage travels with the reply (never in shared "last call" state), which is what keeps
    accounting exact when many calls run at once.
    """

    text: str
    model: str
    usage: LMUsage


def to_messages(prompt: Prompt) -> Messages:
    """Turn a prompt (a string or a list of chat messages) into chat messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return prompt
    raise TypeError(
        f"A prompt must be a str or a list of message dicts, not {type(prompt).__name__}"
    )


def resolve_api_key(
    explicit: str | None, env_vars: tuple[str, ...], backend: str, *, required: bool = True
) -> str | None:
    """Return ``explicit`` or the first set variable of ``env_vars``.

    Raises :class:`MissingAPIKeyError` (one clear line) when none is set and ``required``.
    """
    if explicit:
        return explicit
    for var in env_vars:
        value = os.environ.get(var)
        if value:
            return value
    if required:
        names = " or ".join(env_vars)
        raise MissingAPIKeyError(
            f"backend {backend!r} needs an API key: set {names} or pass "
            f"backend_kwargs={{'api_key': ...}}"
        )
    return None


def with_retries(
    call: Callable[[], T],
    *,
    is_retryable: Callable[[BaseException], bool],
    max_retries: int,
    backoff: float,
    max_backoff: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    retry_after: Callable[[BaseException], float | None] | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> T:
    """Run ``call``; on a retryable error wait ``backoff * 2**attempt`` (with jitter) and retry.

    ``retry_after(exc)``, when given, is how long the server asked to wait (``None``: it did
    not say): the wait is then at least that long. An error whose wait would exceed
    ``max_retry_after`` seconds is raised at once. After ``max_retries`` retries the last
    error is raised as :class:`BackendError`.
    """
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            asked = retry_after(exc) if retry_after is not None else None
            if asked is not None and asked > max_retry_after:
                raise
            if attempt >= max_retries:
                raise BackendError(
                    f"LM call failed after {attempt + 1} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            delay = min(max_backoff, backoff * (2**attempt)) * (0.5 + random.random() / 2)
            sleep(max(delay, asked or 0.0))
            attempt += 1


class Backend(ABC):
    """A language model the RLM can call.

    Subclasses implement :meth:`complete`. Instances are shared by every thread of a run
    (root loop, batched sub-calls, child RLMs), so :meth:`complete` must be thread-safe and
    keep no per-call state on ``self``.

    Constructor keyword arguments are ``backend_kwargs``; ``model_name`` and
    ``sampling_args`` mean the same for every backend (as in ``rlms``).
    """

    name: ClassVar[str] = ""
    """The registered backend name (``"openai"``, ``"scripted"``, ...)."""

    def __init__(
        self,
        model_name: str | None = None,
        sampling_args: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        self.model_name = model_name or "unknown"
        self.sampling_args: dict[str, Any] = dict(sampling_args or {})
        self.timeout = timeout
        self.kwargs = kwargs

    @abstractmethod
    def complete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Send ``messages`` to ``model`` (default :attr:`model_name`) and return the reply."""

    def completion(self, prompt: Prompt, model: str | None = None) -> str:
        """Return just the reply text for a string or message-list prompt."""
        return self.complete(to_messages(prompt), model).text

    async def acomplete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Asyncio twin of :meth:`complete` (runs it in a worker thread by default)."""
        return await asyncio.to_thread(self.complete, messages, model)

    def context_limit(self, model: str | None = None) -> int | None:
        """The model's context window in tokens when known, else ``None``."""
        return None

    @classmethod
    def configured_model(cls, backend_kwargs: Mapping[str, Any]) -> str | None:
        """The model of calls that name none, as known from ``backend_kwargs`` before the
        backend is created (``model_name`` by default)."""
        model = backend_kwargs.get("model_name")
        return str(model) if model else None

    @classmethod
    def reports_cost(cls, backend_kwargs: Mapping[str, Any]) -> bool:
        """Whether a backend made with ``backend_kwargs`` reports each call's USD cost
        itself (``LMUsage.cost``), so no price is needed to enforce ``max_budget``."""
        return False

    def close(self) -> None:
        """Release connections. Called once when the owning RLM is closed."""
