"""``daytona``: the agent in a Daytona sandbox, over ``stdio`` (settings, capabilities)."""

from __future__ import annotations

from typing import Any

from rlm_core import ConfigurationError
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.launcher import Launcher
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF
from rlm_daytona.launcher import DaytonaLauncher, DaytonaOptions, ExecMode

EXEC_MODES = ("pty", "session")


class DaytonaEnvironment(AgentEnvironment):
    """Each session in a Daytona sandbox of its own, reached through the toolbox's PTY (or
    session) WebSocket.

    Settings beyond :class:`~rlm_core.environments.agent.AgentEnvironment`'s:

    * ``image``: a registry image whose ``python3`` (3.11 or later) has ``grpcio`` and
      ``protobuf``; ``snapshot``: a Daytona snapshot with the same. Neither (the default):
      the plugin's own image (:mod:`rlm_daytona.image`), built by Daytona once and reused.
    * ``cpu``, ``memory_gb``: the sandbox's size (with an image; a snapshot has its own).
    * ``network_block_all``: block the sandbox's egress (default on: the environment then
      claims ``network_off``; the bridge needs no network). ``network_allow_list``: CIDRs
      the sandbox may reach (with ``network_block_all=False``).
    * ``exec_mode``: ``"pty"`` (default) or ``"session"``, how the agent's stdio travels.
    * ``auto_stop_minutes``: the sandbox stops (and, being ephemeral, is deleted) after this
      many minutes without activity; ``lease_interval``: seconds between the host's
      activity refreshes. A sandbox whose host died is gone within ``auto_stop_minutes``.
    * ``env``: extra environment variables of the agent; ``target``: the Daytona region.
    """

    name = "daytona"
    launcher_class = DaytonaLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED}

    def __init__(
        self,
        image: str | None = None,
        snapshot: str | None = None,
        cpu: int | None = None,
        memory_gb: int | None = None,
        network_block_all: bool = True,
        network_allow_list: str | None = None,
        exec_mode: str = "pty",
        auto_stop_minutes: int = 1,
        lease_interval: float = 15.0,
        env: dict[str, str] | None = None,
        target: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cpu", cpu, at_least=1, hint="None means the default")
        self.check_range("memory_gb", memory_gb, at_least=1, hint="None means the default")
        self.check_range("auto_stop_minutes", auto_stop_minutes, at_least=1)
        self.check_range("lease_interval", lease_interval, above=0)
        if exec_mode not in EXEC_MODES:
            raise ConfigurationError(
                f"the 'daytona' environment's exec_mode must be 'pty' or 'session', "
                f"not {exec_mode!r}"
            )
        if 2 * lease_interval > 60 * auto_stop_minutes:
            raise ConfigurationError(
                f"the 'daytona' environment's lease_interval ({lease_interval:g} s) must be at "
                f"most half of auto_stop_minutes ({auto_stop_minutes} min), so that one "
                "missed refresh does not stop the sandbox"
            )
        if image is not None and snapshot is not None:
            raise ConfigurationError(
                "the 'daytona' environment takes an image or a snapshot, not both"
            )
        if snapshot is not None and (cpu is not None or memory_gb is not None):
            raise ConfigurationError(
                "the 'daytona' environment's cpu and memory_gb size a sandbox built from an "
                f"image; with snapshot={snapshot!r} the sandbox has that snapshot's size"
            )
        if network_block_all and network_allow_list is not None:
            raise ConfigurationError(
                "the 'daytona' environment's network_allow_list needs network_block_all=False "
                "(network_block_all blocks every address)"
            )
        mode: ExecMode = "pty" if exec_mode == "pty" else "session"
        self.options = DaytonaOptions(
            image=image,
            snapshot=snapshot,
            cpu=cpu,
            memory_gb=memory_gb,
            network_block_all=network_block_all,
            network_allow_list=network_allow_list,
            exec_mode=mode,
            auto_stop_minutes=auto_stop_minutes,
            lease_interval=float(lease_interval),
            env=dict(env or {}),
            target=target,
        )
        if network_block_all:
            self.capabilities = type(self).capabilities | {NETWORK_OFF}

    def make_launcher(self) -> Launcher:
        """A :class:`~rlm_daytona.launcher.DaytonaLauncher` with this environment's settings."""
        return DaytonaLauncher(self.options)
