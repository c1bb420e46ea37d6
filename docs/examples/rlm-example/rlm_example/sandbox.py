"""A stand-in for a provider's SDK: sandboxes on this machine.

It offers what a cloud provider's client library offers, done locally, so the launcher in
:mod:`rlm_example.launcher` is written exactly as it would be against a real SDK:

* :meth:`Sandbox.create` makes a sandbox: a private directory (mode 0700) in the temporary
  directory (in ``/tmp`` when that is deep, so paths in a sandbox stay short), with its own
  ``home`` and ``tmp``, described by a ``sandbox.json`` file, and deleted after ``timeout``
  seconds when one is given (a provider's server-side timeout);
* :meth:`Sandbox.exec` runs a command string through ``/bin/sh -c`` in the sandbox's
  directory, with a small environment of its own and pipes for stdin, stdout and stderr;
* :meth:`Sandbox.delete` stops the sandbox as a container runtime does (SIGTERM to each
  process it started, SIGKILL to their process groups after a grace period) and removes its
  directory;
* :func:`list_sandboxes` and :func:`delete_sandboxes` find sandboxes by id, tag or label
  value, from any process on this machine that uses the same temporary directory.

Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlm_core.environments.launching import with_package_on_path
from rlm_core.environments.subprocess import start_process

PREFIX = "rlm-example-"
"""Sandbox directories are ``<tmp>/rlm-example-<id>``; the id is the part after the prefix."""

STOP_GRACE = 5.0
"""Seconds a stopped sandbox's processes get after SIGTERM before SIGKILL."""

_PASSED_ON = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH")
"""The host variables a sandbox's processes see; nothing else of the host's environment."""

ROOT_MAX = 60
"""The longest temporary directory sandboxes are made in; below a deeper one, ``/tmp``
(a Unix socket's path, say, has at most 107 bytes)."""


def _root() -> Path:
    base = tempfile.gettempdir()
    return Path(base if len(base) <= ROOT_MAX or not os.path.isdir("/tmp") else "/tmp")


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks (``None`` when it is gone), so a
    recorded process is never confused with a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


class Sandbox:
    """One sandbox: a private directory and the processes started in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name.removeprefix(PREFIX)
        self._timer: threading.Timer | None = None

    @classmethod
    def create(
        cls,
        *,
        tag: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Sandbox:
        """A new sandbox carrying ``tag`` and ``labels``, deleted after ``timeout`` seconds
        if given."""
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=_root()))
        for name in ("home", "tmp"):
            (path / name).mkdir(mode=0o700)
        sandbox = cls(path)
        sandbox._write({"id": sandbox.id, "tag": tag, "labels": dict(labels or {})})
        if timeout is not None:
            sandbox._timer = threading.Timer(timeout, sandbox.delete)
            sandbox._timer.daemon = True
            sandbox._timer.start()
        return sandbox

    def carries(self, tag: str) -> bool:
        """Whether ``tag`` is the sandbox's tag or the value of one of its labels."""
        info = self.info
        return tag == info.get("tag") or tag in info.get("labels", {}).values()

    @property
    def info(self) -> dict[str, Any]:
        """What ``sandbox.json`` says (empty once the sandbox is deleted)."""
        try:
            data: dict[str, Any] = json.loads((self.path / "sandbox.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _write(self, info: Mapping[str, Any]) -> None:
        staged = self.path / "sandbox.json.new"
        staged.write_text(json.dumps(info))
        staged.replace(self.path / "sandbox.json")

    def environment(self) -> dict[str, str]:
        """The environment of the sandbox's processes: its own ``HOME`` and ``TMPDIR``,
        the host's ``PATH`` and locale, and the host's ``rlm_core`` on ``PYTHONPATH`` (the
        agent is shipped from the host, never installed from an index)."""
        env = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
        env.update(HOME=str(self.path / "home"), TMPDIR=str(self.path / "tmp"))
        return with_package_on_path(env)

    def exec(self, command: str) -> subprocess.Popen[bytes]:
        """Run ``command`` with ``/bin/sh -c`` in the sandbox's directory, with binary
        pipes for stdin, stdout and stderr, in a session of its own."""
        # start_process starts it from one long-lived thread of the host: a parent-death
        # signal the process arms follows the thread that started it (Linux).
        process: subprocess.Popen[bytes] = start_process(
            ["/bin/sh", "-c", command],
            cwd=self.path,
            env=self.environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        info = self.info
        info["processes"] = [*info.get("processes", []), [process.pid, _start_time(process.pid)]]
        self._write(info)
        return process

    def _running(self, processes: list[list[int]]) -> list[list[int]]:
        """Those of ``processes`` (``[pid, start time]``) that still run."""
        return [
            [pid, started]
            for pid, started in processes
            if started is not None and _start_time(pid) == started
        ]

    def delete(self) -> None:
        """Stop every process the sandbox started, then remove it. Safe to call twice."""
        if self._timer is not None:
            self._timer.cancel()
        running = self._running(self.info.get("processes", []))
        for pid, _ in running:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while running and time.monotonic() < deadline:
            time.sleep(0.02)
            running = self._running(running)
        for pid, _ in running:  # each was started as the leader of its own process group
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.path, ignore_errors=True)


def _sandboxes() -> list[Sandbox]:
    return [Sandbox(p.parent) for p in sorted(_root().glob(f"{PREFIX}*/sandbox.json"))]


def list_sandboxes(tag: str | None = None) -> list[str]:
    """The ids of the sandboxes on this machine (those carrying ``tag`` when given)."""
    return [s.id for s in _sandboxes() if tag is None or s.carries(tag)]


def delete_sandboxes(ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
    """Delete the sandboxes named by ``ids`` or carrying ``tag`` (with neither: all of
    them); return their ids."""
    wanted = set(ids)
    every = not wanted and tag is None
    deleted = []
    for sandbox in _sandboxes():
        if every or sandbox.id in wanted or (tag is not None and sandbox.carries(tag)):
            sandbox.delete()
            deleted.append(sandbox.id)
    return deleted
