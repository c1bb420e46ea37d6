"""Token estimates for compaction decisions (no tokenizer dependency)."""

from __future__ import annotations

from rlm_core.types import Messages

DEFAULT_CONTEXT_LIMIT = 128_000
"""Context window assumed when a backend does not know its model's."""

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token, rounded up."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_message_tokens(messages: Messages) -> int:
    """Estimated prompt tokens of a chat transcript (content plus ~3 tokens per message)."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        total += 3 + estimate_tokens(content if isinstance(content, str) else str(content))
    return total
