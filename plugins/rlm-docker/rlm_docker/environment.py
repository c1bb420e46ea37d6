"""The ``docker`` environment: its settings and capabilities."""

from __future__ import annotations

from typing import Any, Literal

from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import DISK_LIMIT, ISOLATED, MEMORY_LIMIT, NETWORK_OFF, Session
from rlm_core.environments.launcher import Launcher
from rlm_docker.command import ContainerSpec
from rlm_docker.engine import engine_name, engine_path, ensure_image
from rlm_docker.launcher import DockerLauncher

DEFAULT_IMAGE = "python:3.11-slim"
"""The image used when ``image`` is not given (it needs ``grpcio`` and ``protobuf``)."""


class DockerEnvironment(AgentEnvironment):
    """Cells run in a container of a local (or ``DOCKER_HOST``) Docker or Podman engine, by
    an agent shipped from this host.

    Settings beyond :class:`~rlm_core.environments.agent.AgentEnvironment`'s:

    * ``image`` (default ``python:3.11-slim``): an image with ``python3``, ``grpcio`` and
      ``protobuf`` (see docs/docker.md for a two-line Dockerfile).
    * ``engine``: the engine's CLI, ``docker`` or ``podman`` (or a path); default
      ``$RLM_DOCKER_ENGINE``, else ``docker``. ``DOCKER_HOST`` and Docker contexts apply.
    * ``network`` (default ``"none"``): the container's network (``--network``); with
      ``"none"`` the environment claims ``network_off``. The bridge needs no network.
    * ``memory_limit_mb``: the container's memory (no swap beyond it), also the agent's
      address-space limit, so a cell that allocates past it gets ``MemoryError``.
    * ``cpus``: CPUs the container may use (``--cpus``).
    * ``pids_limit`` (default 512): processes the container may hold (``None``: the
      engine's default).
    * ``disk_limit_mb`` (default 256): the container's root file system is read-only and
      its ``/tmp`` (home and working directory) a tmpfs of this size, so filling it fails
      in the container (claims ``disk_limit``); ``None``: a writable root in the engine's
      storage, unbounded.
    * ``pull``: ``"missing"`` (default: pull an image that is not on the engine),
      ``"never"`` or ``"always"``.
    * ``python`` (default ``python3``): the interpreter in the image.
    * ``user``: the user the agent runs as (``--user``); default the image's.
    * ``tag``: an extra label (``rlm-tag``) for ``rlm cleanup docker --tag``.
    * ``run_args``: more options for ``docker run`` (e.g. ``["--runtime", "runsc"]``).
    """

    name = "docker"
    launcher_class = DockerLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED, MEMORY_LIMIT}

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        engine: str | None = None,
        network: str = "none",
        memory_limit_mb: int | None = None,
        cpus: float | None = None,
        pids_limit: int | None = 512,
        disk_limit_mb: int | None = 256,
        pull: Literal["missing", "never", "always"] = "missing",
        python: str = "python3",
        user: str | None = None,
        tag: str | None = None,
        run_args: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("memory_limit_mb", memory_limit_mb, at_least=16)
        self.check_range("cpus", cpus, above=0)
        self.check_range("pids_limit", pids_limit, at_least=16)
        self.check_range("disk_limit_mb", disk_limit_mb, at_least=1, hint="None means no limit")
        self.engine = engine
        self.pull = pull
        self.spec = ContainerSpec(
            image=image,
            python=python,
            network=network,
            memory_limit_mb=memory_limit_mb,
            cpus=cpus,
            pids_limit=pids_limit,
            disk_limit_mb=disk_limit_mb,
            user=user,
            tag=tag,
            run_args=tuple(run_args or ()),
        )
        if network == "none":
            self.capabilities = self.capabilities | {NETWORK_OFF}
        if disk_limit_mb is not None:
            self.capabilities = self.capabilities | {DISK_LIMIT}

    @property
    def image(self) -> str:
        """The image the containers run."""
        return self.spec.image

    def start(self, session: Session) -> None:
        """Check the engine and the image (pulling it if allowed), then start the agent.

        Raises :class:`~rlm_docker.errors.DockerEngineError` when the engine's CLI is
        missing or its daemon does not answer, and
        :class:`~rlm_docker.errors.DockerImageError` when the image is missing.
        """
        if self.active_launcher is None:
            ensure_image(engine_path(self.engine), self.image, self.pull, self.startup_timeout)
        super().start(session)

    def make_launcher(self) -> Launcher:
        """A :class:`~rlm_docker.launcher.DockerLauncher` with this environment's settings."""
        return DockerLauncher(self.spec, engine_name(self.engine))
