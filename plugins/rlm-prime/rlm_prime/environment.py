"""``prime``: the agent in a Prime Intellect sandbox, over the ``stdio`` carrier (settings,
capabilities; the SDK is not imported)."""

from __future__ import annotations

from typing import Any

from rlm_core import ConfigurationError
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.launcher import Launcher
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF
from rlm_prime.launcher import MAX_TIMEOUT_MINUTES, PrimeLauncher, SandboxSpec


class PrimeEnvironment(AgentEnvironment):
    """Each session in a Prime sandbox (a VM) of its own, reached through the SDK's live
    process (``open_process``) stdio.

    Settings beyond :class:`~rlm_core.environments.agent.AgentEnvironment`'s:

    * ``docker_image``: an image whose ``python3`` (3.11 or later) has ``grpcio`` and
      ``protobuf``; ``None`` (the default) uses the plugin's own image, built once per
      account and then reused (:mod:`rlm_prime.image`).
    * ``cpu_cores``, ``memory_gb``, ``disk_size_gb``, ``region``, ``team_id``: as Prime's
      ``CreateSandboxRequest`` takes them.
    * ``allow_internet_access`` (default off): open egress. Off, the sandbox is created
      with ``network_allowlist=[]`` (nothing, not even DNS) and the environment claims
      ``network_off``; the bridge needs no network.
    * ``network_allowlist``: with egress off, the destinations the sandbox may still reach
      (hosts, ``*.`` wildcards, IPv4 addresses or CIDRs); ``network_off`` is then not
      claimed.
    * ``idle_timeout_minutes``: Prime ends a sandbox idle this long (never longer than its
      lifetime); with the agent's heartbeat watchdog, the bound on a sandbox whose host
      died.
    * ``tag``: an extra label (``rlm-tag=TAG``) for listing and ``rlm cleanup prime --tag``.
    * ``env``: extra environment variables of the agent.

    ``max_lifetime`` becomes the sandbox's ``timeout_minutes`` (whole minutes, rounded up;
    default 60, at most 24 hours).
    """

    name = "prime"
    launcher_class = PrimeLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED}

    def __init__(
        self,
        docker_image: str | None = None,
        cpu_cores: float = 1.0,
        memory_gb: float = 1.0,
        disk_size_gb: float | None = None,
        allow_internet_access: bool = False,
        network_allowlist: list[str] | None = None,
        idle_timeout_minutes: int = 5,
        region: str | None = None,
        team_id: str | None = None,
        tag: str | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cpu_cores", cpu_cores, above=0)
        self.check_range("memory_gb", memory_gb, above=0)
        self.check_range("disk_size_gb", disk_size_gb, above=0, hint="None means the default")
        self.check_range("idle_timeout_minutes", idle_timeout_minutes, at_least=1)
        if self.max_lifetime is not None and self.max_lifetime > MAX_TIMEOUT_MINUTES * 60:
            raise ConfigurationError(
                "the 'prime' environment's setting max_lifetime must be at most "
                f"{MAX_TIMEOUT_MINUTES * 60} seconds (Prime's longest sandbox lifetime), "
                f"not {self.max_lifetime:g}"
            )
        if allow_internet_access and network_allowlist is not None:
            raise ConfigurationError(
                "the 'prime' environment's network_allowlist limits egress; with "
                "allow_internet_access=True egress is open: set one of them"
            )
        allowlist = None if allow_internet_access else list(network_allowlist or [])
        _check_allowlist(allowlist)
        self.spec = SandboxSpec(
            docker_image=docker_image,
            cpu_cores=float(cpu_cores),
            memory_gb=float(memory_gb),
            disk_size_gb=None if disk_size_gb is None else float(disk_size_gb),
            network_allowlist=allowlist,
            idle_timeout_minutes=idle_timeout_minutes,
            region=region,
            team_id=team_id,
            tag=tag,
            env=dict(env or {}),
        )
        if allowlist == []:
            self.capabilities = type(self).capabilities | {NETWORK_OFF}

    def make_launcher(self) -> Launcher:
        """A :class:`~rlm_prime.launcher.PrimeLauncher` with this environment's settings."""
        return PrimeLauncher(self.spec)


def _check_allowlist(allowlist: list[str] | None) -> None:
    """Refuse an allowlist entry Prime would refuse, before anything starts (the SDK's own
    check, imported only when there is something to check)."""
    if not allowlist:
        return
    from prime_sandboxes.models import validate_egress_lists

    try:
        validate_egress_lists(allowlist, None)
    except ValueError as exc:
        raise ConfigurationError(f"the 'prime' environment's setting {exc}") from None
