"""``ipython``: cells run by an IPython shell, in this process or in a child process.

One name, two kernel modes, as in ``rlms``: ``kernel_mode="in_process"`` (the default) is
the ``local`` environment with an IPython shell running its cells;
``kernel_mode="subprocess"`` is the ``subprocess`` environment whose agent runs its cells
through an IPython shell (``--repl rlm_ipython.namespace:IPythonNamespace``), with everything
that environment gives: hard cell timeouts, crash reports, memory limits, no leftovers.
"""

from __future__ import annotations

from typing import Any, Literal, Self, cast

from rlm_core import ConfigurationError
from rlm_core.environments.base import Session
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.settings import given_settings
from rlm_core.environments.subprocess import SubprocessEnvironment

KernelMode = Literal["in_process", "subprocess"]

REPL_VARIABLE = "RLM_AGENT_REPL"
"""The agent's environment variable naming the namespace its cells run in."""

REPL_SPEC = "rlm_ipython.namespace:IPythonNamespace"
"""That namespace, as the agent loads it (``MODULE:NAME``): imported in the agent only, so
a host in subprocess mode never imports IPython."""

IN_PROCESS_SETTINGS = frozenset({"kernel_mode", "startup_timeout"})
"""What ``kernel_mode="in_process"`` takes (``startup_timeout`` for ``rlms``'s sake: there
is nothing to wait for)."""


class InProcessIPythonEnvironment(LocalEnvironment):
    """``kernel_mode="in_process"``: the ``local`` environment, its cells run by a private
    IPython shell in this process (see :class:`~rlm_ipython.namespace.IPythonNamespace`).

    Like ``local`` it is fast and is not a security boundary, and it lacks the
    ``timeout`` capability: a running cell cannot be interrupted in-process, so
    ``cell_timeout`` is refused (``kernel_mode="subprocess"`` has it).
    """

    name = "ipython"

    def __init__(
        self,
        kernel_mode: KernelMode = "in_process",
        startup_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("startup_timeout", startup_timeout, above=0)
        self.kernel_mode = kernel_mode
        self.startup_timeout = startup_timeout

    def start(self, session: Session) -> None:
        """Create the IPython namespace (once) and bind it to ``session``."""
        if self._repl is None:
            from rlm_ipython.namespace import IPythonNamespace

            self._repl = IPythonNamespace(session.subcalls)
        super().start(session)


class IPythonEnvironment(SubprocessEnvironment):
    """Cells run by an IPython shell: magics, ``!`` commands, top-level ``await``,
    ``display()``, the last expression's value on stdout, IPython's tracebacks.

    ``kernel_mode`` (default ``"in_process"``) picks where: constructing this class with
    ``kernel_mode="in_process"`` returns an :class:`InProcessIPythonEnvironment` (which
    takes ``startup_timeout`` and nothing else); with ``"subprocess"`` it is this class,
    the ``subprocess`` environment with every setting of it (``cell_timeout``,
    ``memory_limit_mb``, ``python``, ``env``, ``prewarm``, ...), whose agent runs its
    cells through an IPython shell. The interpreter (``python``) needs ``ipython`` and
    ``rlm-ipython`` importable.

    The class claims what both modes have; an instance claims what its mode has.
    """

    name = "ipython"
    capabilities = InProcessIPythonEnvironment.capabilities

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """An :class:`InProcessIPythonEnvironment` for ``kernel_mode="in_process"``."""
        settings = given_settings(cls, args, kwargs)
        if cls is IPythonEnvironment and settings.get("kernel_mode", "in_process") == "in_process":
            cls.check_settings(settings)  # unknown names (did you mean?) and types first
            _refuse_subprocess_settings(settings)
            # Not an instance of this class, so its __init__ is not run on it.
            return cast(Self, InProcessIPythonEnvironment(**settings))
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        kernel_mode: KernelMode = "in_process",
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(env={**(env or {}), REPL_VARIABLE: REPL_SPEC}, **kwargs)
        self.kernel_mode = kernel_mode
        self.capabilities = SubprocessEnvironment.capabilities


def _refuse_subprocess_settings(settings: dict[str, Any]) -> None:
    """``ConfigurationError`` naming the settings only ``kernel_mode="subprocess"`` has."""
    extra = sorted(set(settings) - IN_PROCESS_SETTINGS)
    if not extra:
        return
    names = ", ".join(extra)
    verb = "applies" if len(extra) == 1 else "apply"
    raise ConfigurationError(
        f"the 'ipython' environment's {'setting' if len(extra) == 1 else 'settings'} {names} "
        f"{verb} to kernel_mode='subprocess' only: kernel_mode='in_process' (the default) "
        "runs cells in this process, with no child process to interrupt, limit or "
        f"configure. Set kernel_mode='subprocess' to use {'it' if len(extra) == 1 else 'them'}."
    )
