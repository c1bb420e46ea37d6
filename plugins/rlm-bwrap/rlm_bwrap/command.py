"""The bubblewrap command line an agent runs under.

The command is a fixed prefix (so pre-started agents can be handed out): a tiny ``sh``
script puts bubblewrap in front of the agent's command and binds in the agent's private
socket directory, which it reads from the agent's ``--shared-dir`` argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from rlm_bwrap.runtime import Runtime

SHARED_DIR = "@RLM_SHARED_DIR@"
"""Stands, in the bubblewrap arguments, for the binding of the agent's socket directory."""

_INSERT_SHARED_DIR = f"""
dir=
prev=
for arg do
    if [ "$prev" = --shared-dir ]; then dir=$arg; fi
    prev=$arg
done
first=1
for arg do
    if [ "$first" = 1 ]; then set --; first=0; fi
    if [ "$arg" = {SHARED_DIR} ]; then set -- "$@" --bind "$dir" "$dir"
    else set -- "$@" "$arg"; fi
done
exec "$@"
"""

SANDBOX_HOME = "/tmp"
"""The sandbox's home, working and temporary directory (a private tmpfs)."""

SANDBOX_UID = 1000
"""The unprivileged user and group id cells run as inside the sandbox."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of every process in the sandbox (``None``: inherited)."""

    processes: int | None = None
    """``RLIMIT_NPROC``: processes and threads of the sandbox's user."""
    open_files: int | None = None
    """``RLIMIT_NOFILE``: open file descriptors per process."""
    cpu_seconds: int | None = None
    """``RLIMIT_CPU``: CPU seconds per process (the agent's own over the whole session)."""

    def wrapper(self, interpreter: str) -> list[str]:
        """A command that sets the limits and then runs the command after it (empty when
        there is nothing to set). It runs inside the sandbox, after the user namespace is
        made, so the process limit counts the sandbox's processes only."""
        limits = {
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CPU": self.cpu_seconds,
        }
        calls = "".join(
            f"r.setrlimit(r.{name}, ({value}, {value}))\n"
            for name, value in limits.items()
            if value is not None
        )
        if not calls:
            return []
        code = f"import os, resource as r, sys\n{calls}os.execv(sys.argv[1], sys.argv[1:])"
        return [interpreter, "-I", "-S", "-c", code]


@dataclass(frozen=True)
class SandboxSpec:
    """Everything that decides what one sandbox looks like."""

    bwrap: str
    """The ``bwrap`` binary."""
    runtime: Runtime
    disk_limit_mb: int
    """Size of the private ``/tmp`` and of ``/dev/shm`` (each)."""
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables of the agent."""

    def prefix(self) -> tuple[str, ...]:
        """The command prefix: the agent's command line (``python -m rlm_core.agent ...``)
        follows it."""
        arguments = [*self.bwrap_arguments(), "--", *self.limits.wrapper(self.runtime.interpreter)]
        return ("/bin/sh", "-c", _INSERT_SHARED_DIR, "rlm-bwrap", self.bwrap, *arguments)

    def bwrap_arguments(self) -> list[str]:
        """Bubblewrap's options, :data:`SHARED_DIR` standing for the socket directory."""
        size = str(self.disk_limit_mb * 1024 * 1024)
        return [
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--clearenv",
            *self._environment(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            size,
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            size,
            "--tmpfs",
            SANDBOX_HOME,
            # After the private /tmp: a runtime or a checkout under the host's /tmp (a CI
            # clone, a virtual environment there) is bound on top of it, not hidden by it.
            *self._runtime_mounts(),
            SHARED_DIR,
            "--chdir",
            SANDBOX_HOME,
            "--remount-ro",
            "/",
        ]

    def _environment(self) -> Iterator[str]:
        variables = {
            "PATH": os.path.dirname(self.runtime.interpreter),
            "HOME": SANDBOX_HOME,
            "TMPDIR": SANDBOX_HOME,
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(self.runtime.path),
            **self.env,
        }
        for name, value in variables.items():
            yield from ("--setenv", name, value)

    def _runtime_mounts(self) -> Iterator[str]:
        runtime = self.runtime
        yield from ("--ro-bind", runtime.prefix, runtime.prefix)
        for site in runtime.sites:  # the interpreter's own installed packages stay hidden
            yield from ("--tmpfs", site)
        for library in runtime.libraries:
            if not _inside(library, runtime.prefix):
                yield from ("--ro-bind", library, library)
        yield from _loader_links()
        yield from ("--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache")
        for package in runtime.packages:
            yield from ("--ro-bind", package, package)
        for site in runtime.sites:
            yield from ("--remount-ro", site)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _loader_links() -> Iterator[str]:
    """``/lib``, ``/lib64`` and ``/usr/lib64`` as the host has them (links on a merged
    ``/usr``), so the dynamic loader is found where programs expect it."""
    for top in ("/lib", "/lib64", "/usr/lib64"):
        if os.path.islink(top):
            yield from ("--symlink", os.readlink(top), top)
        elif top != "/lib" and os.path.isdir(top):
            yield from ("--ro-bind", top, top)
