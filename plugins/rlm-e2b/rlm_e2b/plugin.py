"""The ``rlm.environments`` entry point: registers ``e2b`` (without importing the SDK)."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``e2b``: the entry-point name, the name users select."""
    from rlm_e2b.environment import E2BEnvironment

    register("e2b", E2BEnvironment)
