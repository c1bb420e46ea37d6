"""Built-in backends, registered in-process through the same hook as plugins.

Backends whose SDKs are optional extras (``openai``, ``anthropic``, and ``portkey``, which
uses the ``openai`` SDK) import their SDK only when a backend is created, and ``gemini``
needs none, so registering and listing backends imports no LM SDK.
"""

from __future__ import annotations

from collections.abc import Callable

from rlm_core.backends.anthropic import AnthropicBackend
from rlm_core.backends.gemini import GeminiBackend
from rlm_core.backends.openai import (
    AzureOpenAIBackend,
    OpenAIBackend,
    OpenRouterBackend,
    VercelBackend,
    VLLMBackend,
)
from rlm_core.backends.portkey import PortkeyBackend
from rlm_core.backends.scripted import ScriptedBackend
from rlm_core.hookspecs import hookimpl

BUILTIN_BACKENDS: dict[str, Callable[..., object]] = {
    "scripted": ScriptedBackend,
    "openai": OpenAIBackend,
    "openrouter": OpenRouterBackend,
    "vercel": VercelBackend,
    "vllm": VLLMBackend,
    "azure_openai": AzureOpenAIBackend,
    "anthropic": AnthropicBackend,
    "gemini": GeminiBackend,
    "portkey": PortkeyBackend,
}
"""Every built-in backend by name."""


@hookimpl
def rlm_register_backends(register: Callable[..., None]) -> None:
    """Register the built-in backends (see :data:`BUILTIN_BACKENDS`)."""
    for name, factory in BUILTIN_BACKENDS.items():
        register(name, factory)
