"""Plain results and errors of the bridge's calls (no gRPC needed to use them)."""

from __future__ import annotations

from dataclasses import dataclass

from rlm_core.exceptions import SandboxError


@dataclass(frozen=True)
class AgentInfo:
    """What the agent said about itself in the handshake."""

    protocol_version: int
    agent_version: str
    capabilities: tuple[str, ...]
    pid: int
    python_version: str


class AgentGoneError(SandboxError):
    """The connection to the agent broke while ``doing`` something (the agent or its
    sandbox may have died; the environment finds out which)."""

    def __init__(self, doing: str, detail: str, *, unreachable: bool = False) -> None:
        super().__init__(f"{doing}: {detail}")
        self.doing = doing
        self.detail = detail
        self.unreachable = unreachable
        """The agent could not be reached at all (not only a call cut short)."""


class CellDeadlineError(SandboxError):
    """A cell ran past its timeout plus the grace period: the agent ignored the
    interrupt."""
