"""The ``example`` environment: its settings, its capabilities and its launcher."""

from __future__ import annotations

import sys
from typing import Any

from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import MEMORY_LIMIT
from rlm_core.environments.launcher import Launcher
from rlm_example.launcher import ExampleLauncher


class ExampleEnvironment(AgentEnvironment):
    """Cells run in an agent in a sandbox of :mod:`rlm_example.sandbox`, over ``stdio``.

    Settings beyond those of every agent-backed environment (``cell_timeout``, ``tls``,
    ``startup_timeout``, ``max_lifetime``, ...):

    * ``python``: the sandbox's interpreter (default: the host's);
    * ``tag``: a label on every sandbox, to list or clean them up by;
    * ``memory_limit_mb``: cap the agent's address space (the environment then claims
      ``memory_limit``).
    """

    name = "example"
    capabilities = AgentEnvironment.capabilities
    """What every instance guarantees; an instance adds ``memory_limit`` when it has one."""
    launcher_class = ExampleLauncher
    """For what is done per provider: ``rlm cleanup example`` lists and stops leftovers."""

    def __init__(
        self,
        python: str | None = None,
        tag: str | None = None,
        memory_limit_mb: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("memory_limit_mb", memory_limit_mb, at_least=1, hint="None: no limit")
        self.python = python or sys.executable
        self.tag = tag
        self.memory_limit_mb = memory_limit_mb
        if memory_limit_mb is not None:
            self.capabilities = self.capabilities | {MEMORY_LIMIT}

    def make_launcher(self) -> Launcher:
        """A launcher for one sandbox with this environment's settings."""
        return ExampleLauncher(self.python, self.tag, self.memory_limit_mb)
