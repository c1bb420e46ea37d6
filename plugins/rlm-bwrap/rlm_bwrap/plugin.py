"""The ``rlm.environments`` entry point: registers ``bwrap``."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``bwrap``: the entry-point name, the name users select."""
    from rlm_bwrap.environment import BwrapEnvironment

    register("bwrap", BwrapEnvironment)
