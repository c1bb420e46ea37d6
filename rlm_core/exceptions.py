"""Typed errors raised by rlm-core.

The four limit errors and ``CancellationError`` keep the constructor signatures and
attributes of the reference ``rlms`` package, so ``except`` clauses written for it work.
"""

from __future__ import annotations

from rlm_core.agent import MAX_MESSAGE_BYTES


class RLMError(Exception):
    """Base class of every error rlm-core raises on purpose."""


class LimitExceededError(RLMError):
    """Base class of the budget errors; ``partial_answer`` is the best answer so far."""

    partial_answer: str | None = None


class BudgetExceededError(LimitExceededError):
    """The recursion tree spent more than ``max_budget`` USD."""

    def __init__(
        self,
        spent: float,
        budget: float,
        message: str | None = None,
        partial_answer: str | None = None,
    ) -> None:
        self.spent = spent
        self.budget = budget
        self.partial_answer = partial_answer
        super().__init__(message or f"Budget exceeded: spent ${spent:.6f} of ${budget:.6f} budget")


class TimeoutExceededError(LimitExceededError):
    """The completion ran longer than ``max_timeout`` seconds."""

    def __init__(
        self,
        elapsed: float,
        timeout: float,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.elapsed = elapsed
        self.timeout = timeout
        self.partial_answer = partial_answer
        super().__init__(message or f"Timeout exceeded: {elapsed:.1f}s of {timeout:.1f}s limit")


class TokenLimitExceededError(LimitExceededError):
    """The recursion tree used more than ``max_tokens`` tokens (input + output)."""

    def __init__(
        self,
        tokens_used: int,
        token_limit: int,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.tokens_used = tokens_used
        self.token_limit = token_limit
        self.partial_answer = partial_answer
        super().__init__(
            message or f"Token limit exceeded: {tokens_used:,} of {token_limit:,} tokens"
        )


class ErrorThresholdExceededError(LimitExceededError):
    """``max_errors`` iterations in a row had a failing cell."""

    def __init__(
        self,
        error_count: int,
        threshold: int,
        last_error: str | None = None,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.error_count = error_count
        self.threshold = threshold
        self.last_error = last_error
        self.partial_answer = partial_answer
        super().__init__(
            message
            or f"Error threshold exceeded: {error_count} consecutive errors (limit: {threshold})"
        )


class CancellationError(RLMError):
    """The run was interrupted (Ctrl+C)."""

    def __init__(self, partial_answer: str | None = None, message: str | None = None) -> None:
        self.partial_answer = partial_answer
        super().__init__(message or "Execution cancelled by user")


class PluginError(RLMError, ValueError):
    """A plugin is missing, misbehaves or is not allowed to load."""


class UnknownEnvironmentError(PluginError):
    """No installed plugin provides the environment name that was asked for."""


class UnknownBackendError(PluginError):
    """No installed plugin provides the backend name that was asked for."""


class ConfigurationError(RLMError, ValueError):
    """A setting is unknown, of the wrong type or out of range (raised at construction)."""


class ContextError(RLMError, ValueError):
    """A context cannot be loaded into the sandbox as given (the message names which)."""


class BackendError(RLMError):
    """An LM backend call failed for good (after retries)."""


class MissingAPIKeyError(BackendError):
    """A backend needs an API key and none was given or found in the environment."""


class ScriptExhaustedError(BackendError):
    """The scripted test LM was asked for more replies than its script holds."""


class SandboxError(RLMError):
    """Base class of failures of an environment (the sandbox a cell runs in)."""


class CellRejectedError(RLMError):
    """Raised by an ``rlm_before_cell`` hook to stop a cell from running."""


class SandboxCrashedError(SandboxError):
    """The sandbox (its agent) died; ``exit_status`` is its exit code, or ``-N`` for a
    signal N, or ``None`` when the provider cannot tell."""

    def __init__(self, message: str, exit_status: int | None = None) -> None:
        self.exit_status = exit_status
        super().__init__(message)


class SandboxRestartedError(SandboxError):
    """A cell ignored its timeout interrupt, so the sandbox was killed and started again.

    Every variable the cells had made is lost; the contexts were loaded again.
    """


class ProtocolMismatchError(SandboxError):
    """Host and agent speak different versions of the bridge protocol."""


class MessageTooLargeError(SandboxError, ValueError):
    """A value would exceed the bridge's message limit (``MAX_MESSAGE_BYTES``, 64 MiB) on
    the wire, e.g. a variable given to ``set_variable``; nothing was sent. ``size`` is the
    value's size in bytes, ``limit`` the limit. (Contexts are streamed in chunks, so any
    size loads.)"""

    def __init__(self, what: str, size: int, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is {size:,} bytes, over the {limit // (1024 * 1024)} MiB message limit"
        )


class ForkedHostError(SandboxError):
    """A sandbox was started in a process forked from one that had already used the
    bridge: gRPC cannot be used safely after such a fork, so start worker processes with
    ``multiprocessing``'s ``spawn`` or ``forkserver`` start method instead."""


class RLMWarning(UserWarning):
    """Base class of the warnings rlm-core emits, e.g. when a setting cannot take full
    effect on the chosen environment. Filter them with
    ``warnings.filterwarnings("ignore", category=rlm_core.RLMWarning)``."""
