"""rlm-core: Recursive Language Models with pluggable sandboxes.

    from rlm_core import RLM
    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-4o-mini"})
    print(rlm.completion(long_document, root_prompt="What changed in 2021?").response)

Attributes are imported on first use, so ``import rlm_core`` stays cheap and light
modules (such as the in-sandbox agent) can be imported without the plugin machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "RLM": "rlm_core.rlm",
    "RLMLogger": "rlm_core.logger",
    "RLMChatCompletion": "rlm_core.types",
    "REPLResult": "rlm_core.types",
    "UsageSummary": "rlm_core.types",
    "ModelUsageSummary": "rlm_core.types",
    "RLMIteration": "rlm_core.types",
    "Environment": "rlm_core.environments.base",
    "Session": "rlm_core.environments.base",
    "ToolSpec": "rlm_core.vocabulary",
    "AgentEnvironment": "rlm_core.environments.agent",
    "Launcher": "rlm_core.environments.launcher",
    "LaunchRequest": "rlm_core.environments.launcher",
    "AgentSecrets": "rlm_core.environments.launcher",
    "Dial": "rlm_core.bridge.carriers",
    "Stdio": "rlm_core.bridge.carriers",
    "Reverse": "rlm_core.bridge.carriers",
    "Backend": "rlm_core.backends.base",
    "LMResponse": "rlm_core.backends.base",
    "LMUsage": "rlm_core.backends.base",
    "ModelPrice": "rlm_core.pricing",
    "lookup_price": "rlm_core.pricing",
    "register_prices": "rlm_core.pricing",
    "unregister_prices": "rlm_core.pricing",
    "hookimpl": "rlm_core.hookspecs",
    "hookspec": "rlm_core.hookspecs",
    "get_registry": "rlm_core.plugins",
    "RLMError": "rlm_core.exceptions",
    "BudgetExceededError": "rlm_core.exceptions",
    "TimeoutExceededError": "rlm_core.exceptions",
    "TokenLimitExceededError": "rlm_core.exceptions",
    "ErrorThresholdExceededError": "rlm_core.exceptions",
    "CancellationError": "rlm_core.exceptions",
    "LimitExceededError": "rlm_core.exceptions",
    "PluginError": "rlm_core.exceptions",
    "UnknownEnvironmentError": "rlm_core.exceptions",
    "UnknownBackendError": "rlm_core.exceptions",
    "BackendError": "rlm_core.exceptions",
    "MissingAPIKeyError": "rlm_core.exceptions",
    "SandboxError": "rlm_core.exceptions",
    "CellRejectedError": "rlm_core.exceptions",
    "ConfigurationError": "rlm_core.exceptions",
    "ContextError": "rlm_core.exceptions",
    "ForkedHostError": "rlm_core.exceptions",
    "SandboxCrashedError": "rlm_core.exceptions",
    "SandboxRestartedError": "rlm_core.exceptions",
    "ProtocolMismatchError": "rlm_core.exceptions",
    "MessageTooLargeError": "rlm_core.exceptions",
    "ScriptExhaustedError": "rlm_core.exceptions",
    "RLMWarning": "rlm_core.exceptions",
}

__all__ = [
    "RLM",
    "AgentEnvironment",
    "AgentSecrets",
    "Backend",
    "BackendError",
    "BudgetExceededError",
    "CancellationError",
    "CellRejectedError",
    "ConfigurationError",
    "ContextError",
    "Dial",
    "Environment",
    "ErrorThresholdExceededError",
    "ForkedHostError",
    "LMResponse",
    "LMUsage",
    "LaunchRequest",
    "Launcher",
    "LimitExceededError",
    "MessageTooLargeError",
    "MissingAPIKeyError",
    "ModelPrice",
    "ModelUsageSummary",
    "PluginError",
    "ProtocolMismatchError",
    "REPLResult",
    "RLMChatCompletion",
    "RLMError",
    "RLMIteration",
    "RLMLogger",
    "RLMWarning",
    "Reverse",
    "SandboxCrashedError",
    "SandboxError",
    "SandboxRestartedError",
    "ScriptExhaustedError",
    "Session",
    "Stdio",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "ToolSpec",
    "UnknownBackendError",
    "UnknownEnvironmentError",
    "UsageSummary",
    "__version__",
    "get_registry",
    "hookimpl",
    "hookspec",
    "lookup_price",
    "register_prices",
    "unregister_prices",
]

if TYPE_CHECKING:
    from rlm_core.backends.base import Backend, LMResponse, LMUsage
    from rlm_core.bridge.carriers import Dial, Reverse, Stdio
    from rlm_core.environments.agent import AgentEnvironment
    from rlm_core.environments.base import Environment, Session
    from rlm_core.environments.launcher import AgentSecrets, Launcher, LaunchRequest
    from rlm_core.exceptions import (
        BackendError,
        BudgetExceededError,
        CancellationError,
        CellRejectedError,
        ConfigurationError,
        ContextError,
        ErrorThresholdExceededError,
        ForkedHostError,
        LimitExceededError,
        MessageTooLargeError,
        MissingAPIKeyError,
        PluginError,
        ProtocolMismatchError,
        RLMError,
        RLMWarning,
        SandboxCrashedError,
        SandboxError,
        SandboxRestartedError,
        ScriptExhaustedError,
        TimeoutExceededError,
        TokenLimitExceededError,
        UnknownBackendError,
        UnknownEnvironmentError,
    )
    from rlm_core.hookspecs import hookimpl, hookspec
    from rlm_core.logger import RLMLogger
    from rlm_core.plugins import get_registry
    from rlm_core.pricing import ModelPrice, lookup_price, register_prices, unregister_prices
    from rlm_core.rlm import RLM
    from rlm_core.types import (
        ModelUsageSummary,
        REPLResult,
        RLMChatCompletion,
        RLMIteration,
        UsageSummary,
    )
    from rlm_core.vocabulary import ToolSpec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
