"""Environments that break one promise each: the conformance suite must fail every one."""

from __future__ import annotations

from typing import Any

from rlm_core.environments.base import NETWORK_OFF
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment, SubprocessLauncher
from rlm_core.repl import REPLNamespace
from rlm_core.types import REPLResult


class ClaimsNetworkOff(SubprocessEnvironment):
    """Claims ``network_off`` but leaves the network as it is."""

    capabilities = SubprocessEnvironment.capabilities | {NETWORK_OFF}


class _KeepsRunning(SubprocessLauncher):
    def terminate(self) -> None:
        """Forgets the agent instead of stopping it."""


class LeaksOnClose(SubprocessEnvironment):
    """Leaves its agent process running after ``close()``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(prewarm=False, **kwargs)

    def make_launcher(self) -> SubprocessLauncher:
        self.launcher = _KeepsRunning(prewarm=False, ready_timeout=self.startup_timeout)
        return self.launcher


class DropsStderr(LocalEnvironment):
    """Loses what cells write to stderr (tracebacks included)."""

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        result = super().execute(code, timeout)
        result.stderr = ""
        return result


class LosesState(LocalEnvironment):
    """Runs every cell in a fresh namespace (contexts and tools kept)."""

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        fresh = REPLNamespace(self.repl._subcalls)
        for name, value in self.repl.ns.items():
            if name.startswith("context") or name in self.repl._tool_names:
                fresh.ns[name] = value
        self._repl = fresh
        return super().execute(code, timeout)
