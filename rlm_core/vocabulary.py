"""The shared REPL vocabulary: names both the host and the sandbox side use.

Capability names, the reserved REPL names, custom tool specs and the sub-call interface.
Standard library only: the agent imports it inside a sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rlm_core.types import RLMChatCompletion

# Capability names an environment may declare (the conformance suite checks each claim).
ISOLATED = "isolated"  # cells cannot touch the host process's memory or files
NETWORK_OFF = "network_off"  # cells have no network beyond the bridge
TIMEOUT = "timeout"  # a running cell can be interrupted after a deadline
PERSISTENT = "persistent"  # state survives across completion() calls (persistent=True)
SUBCALLS = "subcalls"  # llm_query / llm_query_batched work from cells
RECURSIVE = "recursive"  # rlm_query spawns child RLMs
FILES = "files"  # cells have a writable working directory
COMPACTION = "compaction"  # history can be replaced between iterations
SEPARATE_PROCESS = "separate_process"  # cells run outside the host's process: a cell that
# crashes its interpreter or closes fds 0/1/2 harms only its sandbox (a typed error), and
# every process a cell starts ends when the environment closes
MEMORY_LIMIT = "memory_limit"  # a cell that allocates past a set limit fails in its sandbox
DISK_LIMIT = "disk_limit"  # what cells write to their writable directories is bounded by the
# ``disk_limit_mb`` setting: past it a write fails in the sandbox, never the host's disk

RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "SHOW_VARS",
        "answer",
        "context",
        "history",
    }
)
"""REPL names custom tools may not use; restored after every cell if a cell rebinds them."""


class SubcallHandler(Protocol):
    """The host side of sub-LM calls, handed to an environment when it starts.

    Every method returns :class:`RLMChatCompletion` records and never raises for an LM
    failure: a failed call has ``error`` set and ``response`` set to ``"Error: ..."``.
    Methods are called from any thread; batched methods run their calls concurrently,
    bounded by the run's ``max_concurrent_subcalls``.
    """

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        """One plain LM call."""
        ...

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        """Many plain LM calls at once, results in prompt order."""
        ...

    def rlm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        """A child RLM at depth+1 (a plain LM call at ``max_depth``)."""
        ...

    def rlm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        """Many child RLMs at once, results in prompt order."""
        ...


@dataclass
class ToolSpec:
    """A custom tool: a callable or a plain value, with an optional description."""

    name: str
    value: Any
    description: str | None = None

    @property
    def is_callable(self) -> bool:
        """True for functions, False for data values."""
        return callable(self.value)

    @property
    def source(self) -> str | None:
        """Python source to run inside the sandbox, for ``{"source": "def f(): ..."}``
        entries (which must define ``name``); ``None`` for other tools."""
        value = self.value
        if isinstance(value, dict) and set(value) == {"source"}:
            return str(value["source"])
        return None
