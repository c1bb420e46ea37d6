"""The ``docker run`` command line of one sandbox, and the bootstrap that receives the agent.

The agent is not mounted: the bootstrap (a few lines of ``python3 -c``) reads the agent
bundle's bytes from the container's stdin, writes them to ``/tmp`` and ``exec``\\ s the
agent, which then serves the ``stdio`` carrier on the same stdin and stdout. So a remote
engine (``DOCKER_HOST=ssh://...``) works like a local one, and no file is left on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rlm_core.environments.launcher import LaunchRequest
from rlm_core.environments.shipping import AgentBundle
from rlm_docker.engine import USER_TAG

BUNDLE_DIR = "/tmp"
"""Where the bootstrap writes the agent bundle in the container."""

BOOTSTRAP = (
    "import os,sys\n"
    "n=int(sys.argv[1])\n"
    "fd=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644)\n"
    "while n:\n"
    " b=os.read(0,min(n,65536))\n"
    " if not b:sys.exit('rlm-docker: the agent bundle was cut short')\n"
    " os.write(fd,b);n-=len(b)\n"
    "os.close(fd)\n"
    "os.execvp(sys.argv[3],sys.argv[3:])\n"
)
"""Reads exactly ``argv[1]`` bytes from fd 0 (unbuffered, so what follows stays for the
agent) into ``argv[2]``, then ``exec``\\ s ``argv[3:]``."""


@dataclass(frozen=True)
class ContainerSpec:
    """What a container is run with (from the environment's settings)."""

    image: str = "python:3.11-slim"
    python: str = "python3"
    network: str = "none"
    memory_limit_mb: int | None = None
    cpus: float | None = None
    pids_limit: int | None = 512
    disk_limit_mb: int | None = 256
    user: str | None = None
    tag: str | None = None
    run_args: Sequence[str] = field(default_factory=tuple)

    def labels(self, request: LaunchRequest) -> dict[str, str]:
        """The container's labels: the request's, and ``rlm-tag`` for the ``tag`` setting."""
        labels = dict(request.labels)
        if self.tag is not None:
            labels[USER_TAG] = self.tag
        return labels

    def limits(self) -> list[str]:
        """The resource options: memory (no swap beyond it), CPUs, processes."""
        options: list[str] = []
        if self.memory_limit_mb is not None:
            memory = f"{self.memory_limit_mb}m"
            options += ["--memory", memory, "--memory-swap", memory]
        if self.cpus is not None:
            options += ["--cpus", f"{self.cpus:g}"]
        if self.pids_limit is not None:
            options += ["--pids-limit", str(self.pids_limit)]
        return options

    def file_system(self) -> list[str]:
        """With a disk limit: a read-only root and a size-bounded ``/tmp`` (a tmpfs), the
        working and home directory; what cells write cannot fill the engine's disk."""
        if self.disk_limit_mb is None:
            return []
        tmpfs = f"{BUNDLE_DIR}:rw,exec,size={self.disk_limit_mb}m,mode=1777"
        return ["--read-only", "--tmpfs", tmpfs, "--workdir", BUNDLE_DIR, "--env", "HOME=/tmp"]

    def agent_argv(self, request: LaunchRequest, bundle: AgentBundle) -> list[str]:
        """The agent's command line in the container (``stdio`` carrier, binary framing)."""
        extra = []
        if self.memory_limit_mb is not None:
            extra = ["--memory-limit-mb", str(self.memory_limit_mb)]
        path = f"{BUNDLE_DIR}/{bundle.filename}"
        return request.agent_argv("stdio", python=self.python, bundle=path, extra=extra)

    def run_argv(
        self, engine: str, name: str, request: LaunchRequest, bundle: AgentBundle
    ) -> list[str]:
        """``engine run -i --rm ...``: the whole command that starts the sandbox."""
        argv = [engine, "run", "--interactive", "--rm", "--name", name]
        argv += ["--network", self.network, "--log-driver", "none"]
        for key, value in self.labels(request).items():
            argv += ["--label", f"{key}={value}"]
        argv += self.limits()
        argv += self.file_system()
        if self.user is not None:
            argv += ["--user", self.user]
        argv += [*self.run_args, "--entrypoint", self.python, self.image]
        agent = self.agent_argv(request, bundle)
        argv += ["-c", BOOTSTRAP, str(len(bundle.data)), agent[1], *agent]
        return argv
