"""``bwrap``: the agent in a bubblewrap sandbox of its own (Linux)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from rlm_bwrap.command import Limits, SandboxSpec
from rlm_bwrap.probe import check_user_namespaces, find_bwrap
from rlm_bwrap.runtime import python_runtime
from rlm_core.environments.base import DISK_LIMIT, ISOLATED, NETWORK_OFF
from rlm_core.environments.launcher import Launcher
from rlm_core.environments.subprocess import SubprocessEnvironment, SubprocessLauncher
from rlm_core.exceptions import RLMWarning


class BwrapEnvironment(SubprocessEnvironment):
    """Cells run in a child Python process inside a bubblewrap sandbox: every namespace
    unshared (user, mount, PID, network, IPC, UTS, cgroup), all capabilities dropped, no
    network, a read-only view of the Python runtime and nothing else of the host's files,
    a private size-limited ``/tmp``, fresh ``/proc`` and ``/dev``.

    ``environment_kwargs`` beyond :class:`SubprocessEnvironment`'s (``python``,
    ``memory_limit_mb``, ``env``, ``prewarm`` and the agent settings):

    * ``bwrap``: the bubblewrap binary, a path or a name on ``PATH`` (default ``"bwrap"``).
    * ``disk_limit_mb``: size of the sandbox's ``/tmp`` (its home and working directory)
      and of its ``/dev/shm``, each (default 256).
    * ``max_processes``: processes and threads the sandbox may run at once, the agent's
      included (default ``None``: the host's limit). The kernel exempts the host's root
      user from this limit (``RLIMIT_NPROC``), so it binds only when the host runs as
      another user; under root it is set but warns that it does not bind.
    * ``max_open_files``: open file descriptors per process (default 1024; ``None``: the
      host's limit).
    * ``cpu_time_limit``: CPU seconds each process in the sandbox may use; the agent's
      own process counts its whole session (default ``None``: no limit).
    * ``packages``: further modules the cells may import, made visible read-only with
      everything they load (e.g. ``["numpy"]``; the agent's own are always there).
    """

    name = "bwrap"
    capabilities = SubprocessEnvironment.capabilities | {ISOLATED, NETWORK_OFF, DISK_LIMIT}

    def __init__(
        self,
        bwrap: str = "bwrap",
        disk_limit_mb: int = 256,
        max_processes: int | None = None,
        max_open_files: int | None = 1024,
        cpu_time_limit: int | None = None,
        packages: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("disk_limit_mb", disk_limit_mb, at_least=1)
        self.check_range("max_processes", max_processes, at_least=8, hint="None means no limit")
        self.check_range("max_open_files", max_open_files, at_least=64, hint="None means no limit")
        self.check_range("cpu_time_limit", cpu_time_limit, at_least=1, hint="None means no limit")
        if max_processes is not None and os.geteuid() == 0:
            warnings.warn(
                "the bwrap environment's max_processes does not bind when the host runs as "
                "root: the kernel exempts the root user from RLIMIT_NPROC, and a sandbox "
                "keeps its host user outside its user namespace",
                RLMWarning,
                stacklevel=2,
            )
        self.bwrap = bwrap
        self.disk_limit_mb = disk_limit_mb
        self.limits = Limits(max_processes, max_open_files, cpu_time_limit)
        self.packages = tuple(packages or ())

    def sandbox_spec(self) -> SandboxSpec:
        """What this environment's sandboxes look like (:class:`BwrapUnavailableError`
        when bubblewrap cannot run here)."""
        bwrap = find_bwrap(self.bwrap)
        check_user_namespaces(bwrap)
        runtime = python_runtime(self.python or sys.executable, self.packages)
        return SandboxSpec(bwrap, runtime, self.disk_limit_mb, self.limits, dict(self.env or {}))

    def make_launcher(self) -> Launcher:
        """A :class:`SubprocessLauncher` whose agents start inside the sandbox."""
        spec = self.sandbox_spec()
        launcher = super().make_launcher()
        assert isinstance(launcher, SubprocessLauncher)
        launcher.python = spec.runtime.interpreter
        launcher.prefix = spec.prefix()
        return launcher
