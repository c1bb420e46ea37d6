"""``e2b``: the agent in an E2B sandbox, over the ``stdio`` carrier (settings, capabilities)."""

from __future__ import annotations

from typing import Any

from rlm_core import ConfigurationError
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.launcher import Launcher
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF
from rlm_e2b.launcher import E2BLauncher, E2BOptions


class E2BEnvironment(AgentEnvironment):
    """Each session in an E2B sandbox of its own, reached through ``commands.run`` stdio.

    Settings beyond :class:`~rlm_core.environments.agent.AgentEnvironment`'s:

    * ``template``: an E2B template whose ``python3`` (3.11 or later) has ``grpcio`` and
      ``protobuf``; ``None`` (the default) uses the plugin's own template, built once per
      account and ``cpu_count``/``memory_mb`` and then reused
      (:mod:`rlm_e2b.template`).
    * ``cpu_count``, ``memory_mb``: the sandbox's size (E2B sizes sandboxes per template,
      so these select the plugin's own template of that size; not with ``template``).
    * ``allow_internet_access``: the sandbox's egress (default off: the environment then
      claims ``network_off``; the bridge needs no network).
    * ``lease_interval``: seconds between extensions of the sandbox's E2B timeout, which
      is kept at twice this: a sandbox whose host died is gone within that.
    * ``env``: extra environment variables of the agent.
    """

    name = "e2b"
    launcher_class = E2BLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED}

    def __init__(
        self,
        template: str | None = None,
        cpu_count: int | None = None,
        memory_mb: int | None = None,
        allow_internet_access: bool = False,
        lease_interval: float = 30.0,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cpu_count", cpu_count, at_least=1, hint="None means the default")
        self.check_range("memory_mb", memory_mb, at_least=128, hint="None means the default")
        self.check_range("lease_interval", lease_interval, at_least=1)
        if template is not None and (cpu_count is not None or memory_mb is not None):
            raise ConfigurationError(
                "the 'e2b' environment's cpu_count and memory_mb size the plugin's own "
                f"template; with template={template!r} the sandbox has that template's size "
                "(set it when building the template)"
            )
        self.options = E2BOptions(
            template=template,
            cpu_count=cpu_count,
            memory_mb=memory_mb,
            allow_internet_access=allow_internet_access,
            lease_interval=float(lease_interval),
            env=dict(env or {}),
        )
        if not allow_internet_access:
            self.capabilities = type(self).capabilities | {NETWORK_OFF}

    def make_launcher(self) -> Launcher:
        """An :class:`~rlm_e2b.launcher.E2BLauncher` with this environment's settings."""
        return E2BLauncher(self.options)
