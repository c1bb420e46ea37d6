"""Installing as a user would: a fresh venv, a real ``pip install`` without a package index.

A plugin's install test builds its wheels, installs them by name into a fresh venv from a
local wheelhouse only (so the unrelated public ``rlm-core`` can never be picked), and runs
commands there. Every command runs in a session of its own; afterwards nothing whose
command line names the venv's directory may still run.

    with FreshVenv.create(wheelhouse, checkout) as venv:
        wheels = venv.build_wheels("", "plugins/rlm-modal")   # paths inside the checkout
        venv.install("--find-links", str(wheels), "rlm-core", "rlm-modal")
        venv.run("rlm", "environments")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SETTLE = 30.0
"""Seconds the venv's processes may take to end after the command that started them."""


class VenvError(AssertionError):
    """A command in the fresh venv failed, ran too long, or left processes running."""


class FreshVenv:
    """A venv in a temporary directory of its own, with a copy of the checkout beside it
    (builds write next to their sources, and that belongs here, not in the working tree)
    and a private ``TMPDIR``."""

    def __init__(self, root: Path, wheelhouse: Path) -> None:
        self.root = root
        self.wheelhouse = wheelhouse
        self.bin = root / "venv" / "bin"
        self.sources = root / "src"
        self.tmp = root / "tmp"

    @classmethod
    def create(cls, wheelhouse: Path, checkout: Path) -> FreshVenv:
        """Make the venv and copy ``checkout`` (without VCS, venvs, caches, builds)."""
        made = cls(Path(tempfile.mkdtemp(prefix="rlm-fresh-venv-")), wheelhouse)
        try:
            made.tmp.mkdir()
            shutil.copytree(checkout, made.sources, ignore=_ignored, symlinks=True)
            subprocess.run([sys.executable, "-m", "venv", str(made.root / "venv")], check=True)
        except BaseException:
            shutil.rmtree(made.root, ignore_errors=True)
            raise
        return made

    def env(self) -> dict[str, str]:
        """The host's environment without its Python and pip settings: ``TMPDIR`` and
        pip's configuration are the venv's own, and the venv comes first on ``PATH``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "PYTHON", "RLM_")) and k != "VIRTUAL_ENV"
        }
        env.update(
            PATH=f"{self.bin}{os.pathsep}{env.get('PATH', os.defpath)}",
            TMPDIR=str(self.tmp),
            PIP_CONFIG_FILE=os.devnull,
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
        )
        return env

    def run(
        self,
        *argv: str,
        cwd: Path | None = None,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (a name on the venv's ``PATH`` or a path) in its own session,
        stdout and stderr together; then check it left no process running."""
        if not os.path.isabs(argv[0]) and (self.bin / argv[0]).exists():
            argv = (str(self.bin / argv[0]), *argv[1:])
        process = subprocess.Popen(
            argv,
            cwd=cwd or self.root,
            env={**self.env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise VenvError(f"{argv} ran past {timeout:g}s:\n{output[-5000:]}") from None
        finally:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        left = self.processes(SETTLE)
        if left:
            raise VenvError(f"{argv} left processes running: {left}")
        return subprocess.CompletedProcess(argv, process.returncode, output, "")

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m pip ARGS`` in the venv, without an index: only the wheelhouse (and
        whatever ``--find-links`` the arguments add)."""
        done = self.run(
            "python", "-m", "pip", *args, "--no-index", "--find-links", str(self.wheelhouse)
        )
        if done.returncode != 0:
            raise VenvError(f"pip {' '.join(args)} failed:\n{done.stdout[-5000:]}")
        return done

    def build_wheels(self, *projects: str) -> Path:
        """Build the wheels of ``projects`` (paths inside the checkout; ``""`` is its root)
        without their dependencies; return the directory holding them."""
        wheels = self.root / "wheels"
        paths = [str(self.sources / p) if p else str(self.sources) for p in projects]
        self.pip("wheel", "--no-deps", "--wheel-dir", str(wheels), *paths)
        return wheels

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pip install ARGS`` from local files only."""
        return self.pip("install", *args)

    def processes(self, settle: float = 0.0) -> list[str]:
        """Processes of this venv still running after up to ``settle`` seconds (their
        command lines name the venv's directory); those still there are killed and
        reported."""
        deadline = time.monotonic() + settle
        while True:
            found = running_with(str(self.root))
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid, _ in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return [f"pid {pid}: {line[:200]}" for pid, line in found]

    def leftovers(self) -> list[str]:
        """What commands left in the private ``TMPDIR`` (pytest's own root aside)."""
        return [p.name for p in self.tmp.iterdir() if not p.name.startswith("pytest-of-")]

    def close(self) -> list[str]:
        """Kill what still runs, remove everything; return what was still running."""
        left = self.processes()
        shutil.rmtree(self.root, ignore_errors=True)
        return left

    def __enter__(self) -> FreshVenv:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        left = self.close()
        if left and kind is None:
            raise VenvError(f"processes left running: {left}")


def running_with(marker: str) -> list[tuple[int, str]]:
    """Running processes (not zombies) whose command line contains ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in line and state not in (b"Z", b"X"):
            found.append((int(name), line))
    return found


def _ignored(directory: str, names: list[str]) -> set[str]:
    """What a copy of the checkout leaves out: VCS, venvs, caches and build output."""
    return {
        n
        for n in names
        if n.startswith(".")
        or n in ("__pycache__", "build", "dist")
        or n.endswith(".egg-info")
        or (Path(directory) / n / "pyvenv.cfg").exists()
    }
