"""Host programs run as real processes by the tests: each in its own session and its own
temporary directory, killed by process group afterwards, with what they left checked."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import IO

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
TESTS_DIR = str(Path(__file__).resolve().parent)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int], bound: float = 30.0) -> list[int]:
    """Wait up to ``bound`` seconds for every pid to end; return those still running."""
    deadline = time.monotonic() + bound
    while True:
        running = [pid for pid in pids if not gone(pid)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    """SIGKILL whatever of ``pids`` still runs (clean-up after a failed check)."""
    for pid in pids:
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Host:
    """``python -c SCRIPT`` as a host process: its own session, its own ``TMPDIR``.

    Use as a context manager; on exit the whole process group is killed and the private
    temporary directory removed. :meth:`leftovers` lists what the host's agents, fork
    servers and sandboxes left in that directory.
    """

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rlm-test-host-")
        extra = env or {}
        env = {**os.environ, **extra}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PACKAGE_ROOT, TESTS_DIR, env.get("PYTHONPATH")) if p
        )
        env["TMPDIR"] = self.tmp
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.tracked: list[int] = []

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def read_line(self) -> str:
        """The host's next line of output (fails with its stderr when it ends first)."""
        line = self.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            assert self.process.stderr is not None
            raise AssertionError(f"the host ended early: {self.process.stderr.read()}")
        return line.rstrip("\n")

    def read_pids(self) -> list[int]:
        """Read a line of process ids; they are killed at the end if still running."""
        pids = [int(p) for p in self.read_line().split()]
        self.tracked.extend(pids)
        return pids

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the host to exit; return its status, the rest of stdout, its stderr."""
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def leftovers(self, bound: float = 10.0) -> list[str]:
        """What remains in the host's temporary directory after up to ``bound`` seconds."""
        deadline = time.monotonic() + bound
        while True:
            left = sorted(os.listdir(self.tmp))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        kill_all(self.tracked)
        shutil.rmtree(self.tmp, ignore_errors=True)
