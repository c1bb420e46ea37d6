"""The ``rlm.environments`` entry point: registers ``prime`` (without importing the SDK)."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``prime``: the entry-point name, the name users select."""
    from rlm_prime.environment import PrimeEnvironment

    register("prime", PrimeEnvironment)
