"""The ``rlm.environments`` entry point: registers ``docker``."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``docker``: the entry-point name, the name users select."""
    from rlm_docker.environment import DockerEnvironment

    register("docker", DockerEnvironment)
