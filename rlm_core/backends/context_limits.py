"""Context windows of well-known models, looked up by model name.

The table follows the one in ``rlms`` (``rlm/utils/token_utils.py``): a key matches when
it is contained in the model name, so ``"gpt-4o"`` also matches ``"openai/gpt-4o"`` or
``"@azure/gpt-4o-2024-08-06"``, and the longest matching key wins.
"""

from __future__ import annotations

MODEL_CONTEXT_LIMITS: dict[str, int] = {
    # OpenAI (GPT-5: 272k input, 128k reasoning + output)
    "gpt-5-nano": 272_000,
    "gpt-5": 272_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o-mini": 128_000,
    "gpt-4o-2024": 128_000,
    "gpt-4o": 128_000,
    "gpt-4-turbo-preview": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo-16k": 16_385,
    "gpt-3.5-turbo": 16_385,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    # Anthropic
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000,
    "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000,
    "claude-3-sonnet": 200_000,
    "claude-3-haiku": 200_000,
    "claude-2.1": 200_000,
    "claude-2": 100_000,
    # Gemini
    "gemini-2.5-flash": 1_000_000,
    "gemini-2.5-pro": 1_000_000,
    "gemini-2.0-flash": 1_000_000,
    "gemini-1.5-pro": 1_000_000,
    "gemini-1.5-flash": 1_000_000,
    "gemini-1.0-pro": 30_720,
    # Qwen (Alibaba)
    "qwen3-max": 256_000,
    "qwen3-72b": 128_000,
    "qwen3-32b": 128_000,
    "qwen3-8b": 32_768,
    "qwen3": 128_000,
    # Kimi (Moonshot)
    "kimi-k2.5": 262_000,
    "kimi-k2-0905": 256_000,
    "kimi-k2-thinking": 256_000,
    "kimi-k2": 128_000,
    "kimi": 128_000,
    # GLM (Zhipu)
    "glm-4.6": 200_000,
    "glm-4-9b": 1_000_000,
    "glm-4": 128_000,
    "glm": 128_000,
}
"""Known context windows in tokens, keyed by a (lower-case) model-name fragment."""


def context_limit(model_name: str | None) -> int | None:
    """The context window of ``model_name`` in tokens, or ``None`` when it is not known.

    Matching is case-insensitive; an exact key wins, else the longest key contained in the
    name.
    """
    if not model_name:
        return None
    name = model_name.lower()
    exact = MODEL_CONTEXT_LIMITS.get(name)
    if exact is not None:
        return exact
    best_key = ""
    best: int | None = None
    for key, limit in MODEL_CONTEXT_LIMITS.items():
        if key in name and len(key) > len(best_key):
            best_key, best = key, limit
    return best
