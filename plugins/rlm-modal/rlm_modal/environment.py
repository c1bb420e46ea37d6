"""The ``modal`` environment: its settings and capabilities (the SDK is not imported)."""

from __future__ import annotations

from typing import Any

from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import ISOLATED, NETWORK_OFF
from rlm_core.environments.launcher import Launcher
from rlm_core.exceptions import ConfigurationError
from rlm_modal.launcher import ModalLauncher, SandboxSpec

DEFAULT_LIFETIME = 3600.0
"""Seconds a sandbox lives when ``max_lifetime`` is not set (Modal's ``timeout``)."""

MAX_LIFETIME = 24 * 3600.0
"""Modal's longest sandbox ``timeout``."""


class ModalEnvironment(AgentEnvironment):
    """Cells run in a Modal sandbox, by an agent shipped from this host.

    Settings beyond :class:`~rlm_core.environments.agent.AgentEnvironment`'s:

    * ``block_network`` (default ``True``): the sandbox has no network at all (Modal's
      ``block_network``); the bridge needs none, since it travels over the exec's stdio.
      The environment then claims ``network_off``.
    * ``image``: a registry image to start from (its ``python3`` must have ``pip``);
      ``None``: Modal's ``debian_slim`` with ``python_version``.
    * ``python_version``: the Python of ``debian_slim`` (``None``: this host's).
    * ``cpu`` (cores), ``memory_mb`` (MiB), ``region``: Modal's resource requests.
    * ``idle_timeout``: seconds a sandbox may stay with no agent running before Modal
      ends it (with the agent's heartbeat watchdog, the orphan guard).
    * ``tag``: an extra tag (``rlm-tag``) for listing and ``rlm cleanup modal --tag``.

    ``max_lifetime`` becomes the sandbox's ``timeout`` (default one hour, at most 24).
    """

    name = "modal"
    launcher_class = ModalLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED}

    def __init__(
        self,
        block_network: bool = True,
        image: str | None = None,
        python_version: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        region: str | None = None,
        idle_timeout: float = 60.0,
        tag: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cpu", cpu, above=0)
        self.check_range("memory_mb", memory_mb, at_least=1)
        self.check_range("idle_timeout", idle_timeout, at_least=1)
        if self.max_lifetime is not None and self.max_lifetime > MAX_LIFETIME:
            raise ConfigurationError(
                f"the 'modal' environment's setting max_lifetime must be at most "
                f"{MAX_LIFETIME:g} seconds (Modal's longest sandbox timeout), not "
                f"{self.max_lifetime:g}"
            )
        self.block_network = block_network
        self.image = image
        self.python_version = python_version
        self.cpu = cpu
        self.memory_mb = memory_mb
        self.region = region
        self.idle_timeout = idle_timeout
        self.tag = tag
        if block_network:
            self.capabilities = type(self).capabilities | {NETWORK_OFF}

    def make_launcher(self) -> Launcher:
        """A :class:`~rlm_modal.launcher.ModalLauncher` with this environment's settings."""
        return ModalLauncher(
            SandboxSpec(
                block_network=self.block_network,
                image=self.image,
                python_version=self.python_version,
                cpu=self.cpu,
                memory_mb=self.memory_mb,
                region=self.region,
                lifetime=self.max_lifetime or DEFAULT_LIFETIME,
                idle_timeout=self.idle_timeout,
                tag=self.tag,
            )
        )
