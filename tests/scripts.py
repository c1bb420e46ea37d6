"""Helpers that build scripts for the scripted test LM (the conformance suite's own, which
plugin authors use too) and a sub-call handler that echoes."""

from __future__ import annotations

from typing import Any

from rlm_conformance.doubles import Script, finish, is_root, repl

from rlm_core.types import RLMChatCompletion, UsageSummary

Messages = list[dict[str, Any]]

__all__ = ["EchoHandler", "Messages", "Script", "finish", "is_root", "repl"]


class EchoHandler:
    """A SubcallHandler (the host side of sub-calls) answering ``<kind>:<prompt>``.

    Subclasses may override :meth:`answer` to shape replies.
    """

    def answer(self, prompt: Any, kind: str) -> str:
        return f"{kind}:{prompt}"

    def _c(self, prompt: Any, kind: str) -> RLMChatCompletion:
        return RLMChatCompletion("echo", prompt, self.answer(prompt, kind), UsageSummary(), 0.0)

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._c(prompt, "llm")

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return [self._c(p, "llm") for p in prompts]

    def rlm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._c(prompt, "rlm")

    def rlm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return [self._c(p, "rlm") for p in prompts]
