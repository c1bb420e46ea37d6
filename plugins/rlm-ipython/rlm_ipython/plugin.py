"""The ``rlm.environments`` entry point ``ipython``: registers :class:`IPythonEnvironment`."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``ipython``: the entry-point name, the name users select."""
    from rlm_ipython.environment import IPythonEnvironment

    register("ipython", IPythonEnvironment)
