"""``scripted``: a deterministic stand-in LM for tests and the offline demo.

It is a test double, not a model. It serves replies from a script: either a list of
strings handed out in order (one per call, across root and sub-calls alike), or a function
of the chat messages that returns the reply. Usage is reported as if one token were four
characters, so token budgets and usage accounting can be tested exactly.

    RLM(backend="scripted", backend_kwargs={"responses": ["```repl\\nanswer['content']='4'\\n"
                                                          "answer['ready']=True\\n```"]})
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlm_core.backends.base import Backend, LMResponse, LMUsage
from rlm_core.exceptions import BackendError, ScriptExhaustedError
from rlm_core.types import Messages

Script = Sequence[str] | Callable[[Messages], str] | Callable[[Messages, str], str]


def estimate_tokens(text: str) -> int:
    """The scripted LM's token count for ``text``: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


def _message_text(messages: Messages) -> str:
    return "".join(str(m.get("content") or "") for m in messages)


def _accepts_two_args(fn: Callable[..., str]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class ScriptedBackend(Backend):
    """A scripted test LM (a deterministic stand-in, never a real model).

    ``backend_kwargs``:

    * ``responses``: a list of reply strings served in order, or a callable
      ``f(messages) -> str`` (or ``f(messages, model) -> str``).
    * ``model_name``: reported model name (default ``"scripted"``).
    * ``cost_per_token``: USD per token, reported as each call's cost (default: none, so
      the cost comes from the price of ``model_name``, if it has one).
    * ``context_window``: tokens reported by :meth:`context_limit` (default 128000).

    Thread-safe: list scripts are popped under a lock. Once a list is used up the next call
    raises :class:`ScriptExhaustedError` naming how many replies it had.
    """

    name = "scripted"

    def __init__(
        self,
        responses: Script | None = None,
        model_name: str | None = None,
        cost_per_token: float | None = None,
        context_window: int = 128_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name or "scripted", **kwargs)
        if responses is None:
            raise BackendError(
                "the scripted test LM needs backend_kwargs={'responses': [...]} "
                "(a list of replies or a function of the messages)"
            )
        self._lock = threading.Lock()
        self._fn: Callable[..., str] | None = None
        self._replies: list[str] = []
        self._served = 0
        self._fn_takes_model = False
        if callable(responses):
            self._fn = responses
            self._fn_takes_model = _accepts_two_args(responses)
        else:
            self._replies = [str(r) for r in responses]
        self.cost_per_token = cost_per_token
        self.context_window = context_window
        self.calls: list[Messages] = []
        """Every message list this backend was called with, in call order."""

    def _next(self, messages: Messages, model: str) -> str:
        if self._fn is not None:
            if self._fn_takes_model:
                return str(self._fn(messages, model))
            return str(self._fn(messages))
        with self._lock:
            if self._served >= len(self._replies):
                raise ScriptExhaustedError(
                    f"the scripted test LM has only {len(self._replies)} replies and was "
                    f"asked for reply {self._served + 1}"
                )
            reply = self._replies[self._served]
            self._served += 1
            return reply

    def complete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Serve the next scripted reply and report its pseudo-token usage."""
        used_model = model or self.model_name
        with self._lock:
            self.calls.append(messages)
        text = self._next(messages, used_model)
        usage_in = estimate_tokens(_message_text(messages))
        usage_out = estimate_tokens(text)
        cost = None
        if self.cost_per_token is not None:
            cost = (usage_in + usage_out) * self.cost_per_token
        return LMResponse(text, used_model, LMUsage(usage_in, usage_out, cost))

    def context_limit(self, model: str | None = None) -> int | None:
        """The configured ``context_window``."""
        return self.context_window

    @classmethod
    def configured_model(cls, backend_kwargs: Mapping[str, Any]) -> str | None:
        """``model_name``, else ``"scripted"``."""
        return super().configured_model(backend_kwargs) or "scripted"

    @classmethod
    def reports_cost(cls, backend_kwargs: Mapping[str, Any]) -> bool:
        """Whether ``cost_per_token`` is set."""
        return backend_kwargs.get("cost_per_token") is not None
