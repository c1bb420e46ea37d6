"""The ``rlm.environments`` entry point: registers ``modal``."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``modal``: the entry-point name, the name users select."""
    from rlm_modal.environment import ModalEnvironment

    register("modal", ModalEnvironment)
