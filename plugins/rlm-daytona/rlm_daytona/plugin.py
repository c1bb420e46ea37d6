"""The ``rlm.environments`` entry point: registers ``daytona`` (without importing the SDK)."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``daytona``: the entry-point name, the name users select."""
    from rlm_daytona.environment import DaytonaEnvironment

    register("daytona", DaytonaEnvironment)
