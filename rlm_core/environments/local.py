"""``local``: cells run in this Python process, in their own namespace.

Fastest environment and the default. It is not a security boundary: cells can do anything
the host process can. Sub-LM calls are plain function calls into the host (no sockets).
"""

from __future__ import annotations

import sys
from typing import Any

from rlm_core.environments.base import (
    COMPACTION,
    PERSISTENT,
    RECURSIVE,
    SUBCALLS,
    Environment,
    Session,
)
from rlm_core.exceptions import SandboxError
from rlm_core.repl import REPLNamespace
from rlm_core.types import REPLResult


class LocalEnvironment(Environment):
    """Runs cells with ``exec`` in a private namespace of the host process.

    Output capture is per thread, so two RLMs running cells in two threads at once each
    get only their own output. ``sys.exit`` in a cell is reported as an error, not fatal.
    It has no settings of its own; a subclass declares its own as keyword parameters of its
    ``__init__`` and passes ``**kwargs`` on.

    It lacks the ``timeout`` capability (in-process code cannot be interrupted safely), so
    ``cell_timeout`` is refused, and an RLM's ``max_timeout`` is checked only between cells
    and at sub-LM calls (with an :class:`~rlm_core.exceptions.RLMWarning` when the RLM is
    made); the ``subprocess`` environment interrupts a running cell.
    """

    name = "local"
    capabilities = frozenset({PERSISTENT, SUBCALLS, RECURSIVE, COMPACTION})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._repl: REPLNamespace | None = None

    @property
    def repl(self) -> REPLNamespace:
        """The namespace (raises if the environment was not started or is closed)."""
        if self._repl is None:
            raise SandboxError("the local environment is not started (or already closed)")
        return self._repl

    def start(self, session: Session) -> None:
        """Create the namespace (once) and bind it to ``session``."""
        if self._repl is None:
            self._repl = REPLNamespace(session.subcalls)
        else:
            self._repl.bind(session.subcalls)
        self._repl.install_tools(session.custom_tools)

    def load_context(self, payload: Any, index: int) -> None:
        """Bind the payload object itself (no copy, no serialisation)."""
        self.repl.load_context(payload, index)

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        """Run a cell. ``timeout`` is not enforced here: in-process code cannot be
        interrupted safely (use the ``subprocess`` environment for that). The host's
        recursion limit is put back after the cell (a cell's ``sys.setrecursionlimit``
        lasts for that cell: a limit of a million frames can crash the host later)."""
        limit = sys.getrecursionlimit()
        try:
            return self.repl.run(code)
        finally:
            sys.setrecursionlimit(limit)

    def get_variable(self, name: str) -> Any:
        """The live object bound to ``name``."""
        return self.repl.get(name)

    def set_variable(self, name: str, value: Any) -> None:
        """Bind ``name`` to ``value`` (the object itself)."""
        self.repl.set(name, value)

    def close(self) -> None:
        """Drop the namespace."""
        if self._repl is not None:
            self._repl.clear()
            self._repl = None
