"""Helpers that build scripts for the scripted test LM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rlm_core.types import RLMChatCompletion, UsageSummary

Messages = list[dict[str, Any]]


def repl(code: str) -> str:
    """A root reply holding one ```repl block."""
    return f"Let me run this.\n```repl\n{code}\n```"


def finish(content: str) -> str:
    """A root reply that submits ``content`` as the answer."""
    return repl(f"answer['content'] = {content!r}\nanswer['ready'] = True")


def is_root(messages: Messages) -> bool:
    """Root-LM calls start with the RLM system prompt; sub-calls do not."""
    return bool(messages) and messages[0].get("role") == "system"


class Script:
    """Serve ``root`` replies in order to root calls; answer sub-calls with ``sub``.

    Root replies are picked per RLM depth: a child RLM's system prompt is the same, so
    replies are keyed by the number of assistant turns already in the transcript, which
    keeps concurrent child RLMs independent of each other.
    """

    def __init__(
        self,
        root: list[str] | Callable[[Messages], str],
        sub: Callable[[str], str] | None = None,
    ) -> None:
        self.root = root
        self.sub = sub or (lambda prompt: f"sub-answer to: {prompt[:40]}")
        self.lock = threading.Lock()
        self.root_calls = 0
        self.sub_calls: list[str] = []

    def __call__(self, messages: Messages) -> str:
        if is_root(messages):
            with self.lock:
                self.root_calls += 1
            if callable(self.root):
                return self.root(messages)
            turn = sum(1 for m in messages if m["role"] == "assistant")
            if turn >= len(self.root):
                return "I have nothing more to add."
            return self.root[turn]
        prompt = str(messages[-1]["content"])
        with self.lock:
            self.sub_calls.append(prompt)
        return self.sub(prompt)


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
