"""The sandbox side of a provider fake: sandboxes as local processes, isolated.

A wire-level fake of a provider's service (its REST, gRPC or Connect API, reached through
the SDK's own base-URL setting) needs somewhere to run what the SDK asks for. A
:class:`FakeSandbox` is that place: its files live in a private directory on this machine,
and every command it runs is a local process in namespaces of its own (Linux ``unshare``):

* user and pid namespaces: it sees only its own processes, and killing the sandbox kills
  every process in it, however detached;
* a mount namespace with ``/tmp`` and ``/home`` of its own (nothing of the host's there):
  the files the SDK uploads land in them;
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
"""The sandbox paths a fake sandbox has of its own (others are the host's, read-only in
spirit: do not write there)."""

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
        root = shlex.quote(str(self.root))
        mounts = (  # the image first: its source may be under /tmp, covered next
            f"mount --bind {shlex.quote(image_dir())} {root}{IMAGE} && "
            f"mount --rbind {root}/home /home && mount --bind {root}/tmp /tmp && "
            f'cd {shlex.quote(cwd)} && exec "$@"'
        )
        namespaces = ["--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--mount"]
        if not self.network:
            namespaces.append("--net")
        command = [
            "unshare", *namespaces, "--kill-child=SIGKILL",
            "sh", "-c", mounts, "sh", *argv,
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
