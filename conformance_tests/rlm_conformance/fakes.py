"""The sandbox side of a provider fake: sandboxes as local processes, isolated.

A wire-level fake of a provider's service (its REST, gRPC or Connect API, reached through
the SDK's own base-URL setting) needs somewhere to run what the SDK asks for. A
:class:`FakeSandbox` is that place: its files live in a private directory on this machine,
and every command it runs is a local process in namespaces of its own (Linux ``unshare``):

* user and pid namespaces: it sees only its own processes, and killing the sandbox kills
  every process in it, however detached;
* a mount namespace with a root file system of its own: read-only, holding only the
  runtime (``/usr`` and the interpreter's prefix, read-only), a minimal ``/etc`` and
  ``/dev``, its own ``/proc``, and writable ``/tmp`` and ``/home`` where the files the SDK
  uploads land (nothing of the host's ``/etc``, ``/root``, ``/tmp`` or ``/home``);
* a network namespace with no interface up when its network is off (as a provider's
  ``block_network`` does); the host's network otherwise;
* an environment of its own (nothing inherited from the host) and an "image" whose
  ``python3`` has only grpcio and protobuf, like a sandbox image with
  ``pip install grpcio protobuf`` (:func:`image_dir`).

So the conformance suite's isolation tests pass against a fake for the same reasons they
pass against the real provider, and fail if the plugin does not turn the network off.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import google.protobuf as google_protobuf  # type: ignore[import-untyped]
import grpc
import typing_extensions

_HOST_TMP = tempfile.gettempdir()  # as it was at import, before a test redirects tempfile

SANDBOX_DIRS = ("/tmp", "/home")
"""The writable paths of a fake sandbox (the rest of its file system is read-only)."""

HOME = "/home/user"
"""The working directory and ``HOME`` of a fake sandbox's commands."""


IMAGE = "/home/.image"
"""Where a fake sandbox sees its image: ``bin/python3`` and the packages it may import."""


@functools.cache
def image_dir() -> str:
    """The fake image, built once per process on the host: a ``python3`` that is this
    machine's base interpreter without site-packages (``-S``), and copies of grpcio,
    protobuf and grpcio's one dependency (copies, not links: the host's virtual
    environment may live under ``/tmp`` or ``/home``, which a sandbox does not see)."""
    base = Path(tempfile.mkdtemp(prefix="rlm-fake-image-", dir=_HOST_TMP))
    atexit.register(shutil.rmtree, base, True)
    site = base / "site"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(grpc.__file__).parent, site / "grpc", ignore=skip)
    google = Path(google_protobuf.__file__).parent.parent
    shutil.copytree(google, site / "google", ignore=skip)
    shutil.copy(typing_extensions.__file__, site / "typing_extensions.py")
    python = shlex.quote(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    (base / "bin").mkdir()
    for name in ("python3", "python"):
        script = base / "bin" / name
        script.write_text(f'#!/bin/sh\nPYTHONPATH={IMAGE}/site exec {python} -S "$@"\n')
        script.chmod(0o755)
    return str(base)


def _runtime_dirs() -> list[str]:
    """Host directories a sandbox sees read-only: ``/usr`` (and the top-level directories
    that are not links into it) and the prefix of the image's interpreter."""
    dirs = ["/usr"]
    dirs += [f"/{top}" for top in ("bin", "sbin", "lib", "lib64") if not os.path.islink(f"/{top}")]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/"):
        dirs.append(prefix)
    return [d for d in dirs if os.path.isdir(d)]


DEVICES = ("null", "zero", "random", "urandom")
"""The device files a sandbox has (bound from the host's)."""


@functools.cache
def _chroot() -> str:
    """The host's ``chroot`` (coreutils; in ``/usr/sbin``, often not on ``PATH``)."""
    found = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError("a fake sandbox needs chroot (coreutils)")
    return found


def _enter_root(root: Path) -> str:
    """A shell script, run as root of the sandbox's user and mount namespaces, that builds
    the sandbox's own root file system under ``root/.fs`` and runs ``"$@"`` in it from
    the directory ``$1``: a read-only tmpfs holding read-only binds of the runtime
    (:func:`_runtime_dirs`), a minimal ``/etc`` and ``/dev``, its own ``/proc``, and the
    sandbox's writable ``/tmp`` and ``/home`` (with the image at :data:`IMAGE`). Nothing
    else of the host's files is there: not ``/etc``, ``/root`` or the host's ``/tmp``."""
    q = shlex.quote
    fs = f"{q(str(root))}/.fs"
    lines = [
        "set -e",
        f"mkdir -p {fs} && mount -t tmpfs -o mode=0755 rootfs {fs}",
        f"mkdir -p {fs}/tmp {fs}/home {fs}/proc {fs}/dev {fs}/etc",
    ]
    for top in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{top}"):
            lines.append(f"ln -s {q(os.readlink(f'/{top}'))} {fs}/{top}")
    for folder in _runtime_dirs():
        inside = f"{fs}{q(folder)}"
        lines.append(
            f"mkdir -p {inside} && mount --rbind {q(folder)} {inside} && "
            f"mount -o remount,bind,ro {inside}"
        )
    lines += [
        f"mount -t tmpfs -o mode=0755 dev {fs}/dev && mkdir {fs}/dev/shm",
        *(f": > {fs}/dev/{d} && mount --bind /dev/{d} {fs}/dev/{d}" for d in DEVICES),
        f"mount -t tmpfs -o mode=1777 shm {fs}/dev/shm",
        f"echo 'root:x:0:0:root:{HOME}:/bin/sh' > {fs}/etc/passwd",
        f"echo 'root:x:0:' > {fs}/etc/group",
        f"echo '127.0.0.1 localhost' > {fs}/etc/hosts",
        # As on a Debian image: a login shell starts from the system's PATH.
        f"echo 'export PATH=/usr/local/bin:/usr/bin:/bin' > {fs}/etc/profile",
        # The image first: its source may be under the host's /tmp, hidden next.
        f"mount --bind {q(image_dir())} {q(str(root))}{IMAGE}",
        f"mount --rbind {q(str(root))}/home {fs}/home",
        f"mount --bind {q(str(root))}/tmp {fs}/tmp",
        f"mount -t proc proc {fs}/proc",
        f"mount -o remount,ro {fs}",
        f'exec {q(_chroot())} {fs} /bin/sh -c \'cd "$0" && exec "$@"\' "$@"',
    ]
    return "\n".join(lines)


class FakeSandbox:
    """One sandbox of a provider fake (see the module docstring).

    ``labels`` are kept for the fake's listing; ``network`` false runs every command
    without a network. Commands run as ``sh``-free argv lists from :meth:`exec`.
    """

    def __init__(
        self,
        sandbox_id: str,
        *,
        network: bool = True,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.id = sandbox_id
        self.network = network
        self.labels = dict(labels or {})
        self.env = dict(env or {})
        self.root = Path(tempfile.mkdtemp(prefix=f"rlm-fake-{sandbox_id}-"))
        for folder in ("tmp", "home/user", IMAGE.lstrip("/")):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self.killed = False

    # -- files ----------------------------------------------------------------------------

    def path(self, sandbox_path: str) -> Path:
        """Where a sandbox path lives on this machine (``/tmp/...`` or ``/home/...``;
        relative paths are under ``/home/user``)."""
        if not sandbox_path.startswith("/"):
            sandbox_path = f"{HOME}/{sandbox_path}"
        normal = os.path.normpath(sandbox_path)
        for top in SANDBOX_DIRS:
            if normal == top or normal.startswith(top + "/"):
                return self.root / normal.lstrip("/")
        raise PermissionError(
            f"the fake sandbox has only {SANDBOX_DIRS} of its own: {sandbox_path}"
        )

    def write_file(self, sandbox_path: str, data: bytes) -> None:
        """Write a file into the sandbox (parents created); a terminated sandbox refuses
        (``ProcessLookupError``), so a late upload cannot bring its files back."""
        target = self.path(sandbox_path)
        with self._lock:
            self._check_alive()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def _check_alive(self) -> None:
        if self.killed:
            raise ProcessLookupError(f"sandbox {self.id} was terminated")

    def read_file(self, sandbox_path: str) -> bytes:
        """Read a file of the sandbox."""
        return self.path(sandbox_path).read_bytes()

    # -- processes --------------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = HOME,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the sandbox with binary pipes for stdin, stdout and stderr."""
        command = [
            "unshare", *self._namespaces(), "--kill-child=SIGKILL",
            "sh", "-c", _enter_root(self.root), "sh", cwd, *argv,
        ]  # fmt: skip
        environment = {
            "PATH": f"{IMAGE}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": HOME,
            "LANG": "C.UTF-8",
            **self.env,
            **(env or {}),
        }
        with self._lock:  # a sandbox being terminated starts nothing new
            self._check_alive()
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                start_new_session=True,
            )
            self._processes.append(process)
        return process

    def _namespaces(self) -> list[str]:
        namespaces = ["--user", "--map-root-user", "--pid", "--fork", "--mount"]
        return namespaces if self.network else [*namespaces, "--net"]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
        """Run ``argv`` to the end: ``(exit status, stdout, stderr)``."""
        process = self.exec(argv)
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err

    def kill(self) -> None:
        """Terminate the sandbox: every process in it ends, its files are removed."""
        with self._lock:
            self.killed = True
            processes, self._processes = self._processes, []
        # From here on no upload or exec gets in: what is killed and removed stays so.
        for process in processes:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        # The namespace's processes die with its first one, a moment after it: one still
        # writing could keep a directory from going; remove until nothing is left.
        deadline = time.monotonic() + 10.0
        while True:
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
