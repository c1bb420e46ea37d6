"""A shared request rate toward each LM provider.

Every LM call of a configuration with ``rate_limit`` first reserves a slot from the token
bucket of its provider (backend name and base URL). The bucket lives where every worker
reaches it: in-process for the local engine, in one Ray actor per provider for the Ray
engine, so the limit holds for the whole cluster. A reservation never blocks the bucket:
it answers how long the caller must wait, and the caller sleeps.

The ``rate_limited`` backend wraps any backend that way; :func:`limited` rewrites RLM
arguments to use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rlm_core.backends.base import Backend, LMResponse
from rlm_core.hookspecs import hookimpl
from rlm_core.plugins import get_registry
from rlm_core.types import Messages

BACKEND_NAME = "rate_limited"
PLUGIN_NAME = "rlm_core.eval.ratelimit"


class TokenBucket:
    """``rate`` requests per second with bursts of up to ``burst`` (default: one second's
    worth). Not thread-safe on its own (:class:`LocalLimiter` locks; a Ray actor runs one
    call at a time)."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be greater than 0, not {rate}")
        self.rate = float(rate)
        self.capacity = float(burst) if burst else max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.reserved = 0
        self.waited = 0.0

    def reserve(self) -> float:
        """Take one request's slot; return the seconds to wait before sending it."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        self.reserved += 1
        delay = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
        self.waited += delay
        return delay

    def stats(self) -> dict[str, float]:
        """Reservations made so far and the seconds of waiting they were told."""
        return {"reserved": self.reserved, "waited": self.waited, "rate": self.rate}


class Limiter(Protocol):
    """Blocks the caller until it may send one request."""

    def acquire(self) -> None:
        """Wait for a slot."""


class LocalLimiter:
    """A :class:`TokenBucket` shared by the threads of one process."""

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Reserve a slot and sleep until it comes."""
        with self._lock:
            delay = self.bucket.reserve()
        if delay > 0:
            time.sleep(delay)


_limiters: dict[str, Limiter] = {}
_lock = threading.Lock()


def install(limiters: Mapping[str, Limiter]) -> None:
    """Make ``limiters`` (provider key -> limiter) the ones this process's calls use."""
    with _lock:
        _limiters.update(limiters)


def limiter_for(key: str) -> Limiter:
    """The limiter installed for provider ``key``."""
    with _lock:
        found = _limiters.get(key)
    if found is None:
        raise RuntimeError(f"no rate limiter is installed for provider {key!r}")
    return found


def provider_key(backend: str, backend_kwargs: Mapping[str, Any]) -> str:
    """``backend|base_url``: calls with the same key share one rate."""
    return f"{backend}|{backend_kwargs.get('base_url') or ''}"


class RateLimitedBackend(Backend):
    """Any backend, with every call first taking a slot from its provider's limiter."""

    name = BACKEND_NAME

    def __init__(
        self,
        backend: str,
        backend_kwargs: dict[str, Any] | None = None,
        limit_key: str = "",
        **_: Any,
    ) -> None:
        inner = get_registry().backend(backend).factory(**dict(backend_kwargs or {}))
        super().__init__(model_name=inner.model_name)
        self.inner: Backend = inner
        self.limit_key = limit_key or provider_key(backend, backend_kwargs or {})

    def complete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Wait for a slot, then call the wrapped backend."""
        limiter_for(self.limit_key).acquire()
        return self.inner.complete(messages, model)

    def context_limit(self, model: str | None = None) -> int | None:
        """The wrapped backend's context window."""
        return self.inner.context_limit(model)

    def close(self) -> None:
        """Close the wrapped backend."""
        self.inner.close()


class _Plugin:
    @hookimpl
    def rlm_register_backends(self, register: Callable[..., None]) -> None:
        register(BACKEND_NAME, RateLimitedBackend)


def ensure_registered() -> None:
    """Register the ``rate_limited`` backend in this process (once)."""
    registry = get_registry()
    with _lock:
        if not registry.pm.has_plugin(PLUGIN_NAME):
            registry.register(_Plugin(), name=PLUGIN_NAME)


def limited(backend: str, backend_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """RLM ``backend`` and ``backend_kwargs`` that send through the provider's limiter."""
    ensure_registered()
    kwargs = {
        "backend": backend,
        "backend_kwargs": backend_kwargs,
        "limit_key": provider_key(backend, backend_kwargs),
    }
    if "model_name" in backend_kwargs:
        kwargs["model_name"] = backend_kwargs["model_name"]
    return BACKEND_NAME, kwargs
