"""Installing as a user would: a fresh venv, a real ``pip install`` without a package index.

A plugin's install test builds its wheels, installs them by name into a fresh venv from a
local wheelhouse only (so the unrelated public ``rlm-core`` can never be picked), and runs
commands there. Every command runs in a session of its own; afterwards nothing whose
command line names the venv's directory may still run.

    with FreshVenv.create(wheelhouse, checkout) as venv:
        wheels = venv.build_wheels("", "plugins/rlm-modal")   # paths inside the checkout
        venv.install("--find-links", str(wheels), "rlm-core", "rlm-modal")
        venv.run("rlm", "environments")

:func:`plugins_venv` does that for plugins of rlm-core's checkout (``plugins/rlm-NAME``),
and :func:`require_wheels` skips a test whose wheelhouse lacks what it installs. Two
scripts check an installed plugin from the inside: :func:`listing_script` (``rlm
environments`` lists it without importing its SDK; :meth:`Listing.parse` reads what it
printed) and :func:`completion_script` (``RLM(environment=NAME)`` runs a completion;
:func:`printed` reads it).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

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


def require_wheels(wheelhouse: Path, *names: str, hint: str = "") -> None:
    """Skip the calling test unless ``wheelhouse`` holds a wheel of each distribution
    ``names`` (as its wheel files spell it: ``prime_sandboxes``); under ``CI=true`` fail
    it instead, so a CI job cannot pass by installing nothing. ``hint``: how to fill it."""
    missing = [name for name in names if not any(wheelhouse.glob(f"{name}-*.whl"))]
    if missing:
        reason = f"no wheel of {missing} in {wheelhouse}" + (f": {hint}" if hint else "")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def plugins_venv(checkout: Path, wheelhouse: Path, *plugins: str) -> Iterator[FreshVenv]:
    """A fresh venv in which ``pip install rlm-core rlm-NAME ...`` ran for each of
    ``plugins``, with the wheels of rlm-core and of the plugins (``plugins/rlm-NAME``)
    built from ``checkout`` and everything else from ``wheelhouse``. After the block,
    whatever its commands left in the venv's ``TMPDIR`` is a :class:`VenvError`."""
    with FreshVenv.create(wheelhouse, checkout) as venv:
        wheels = venv.build_wheels("", *(f"plugins/rlm-{name}" for name in plugins))
        venv.install("--find-links", str(wheels), "rlm-core", *(f"rlm-{n}" for n in plugins))
        yield venv
        left = venv.leftovers()
        if left:
            raise VenvError(f"commands left files in the venv's TMPDIR: {left}")


_LISTING = """
import sys
from rlm_core.cli import main
code = main(["environments"])
print("sdks loaded:", sorted({{name.split(".")[0] for name in sys.modules}} & {sdks!r}))
raise SystemExit(code)
"""


def listing_script(sdks: Iterable[str]) -> str:
    """Python code that prints ``rlm environments`` (its exit status is the script's),
    then ``sdks loaded: [...]``: which of the packages ``sdks`` (top-level import names)
    the listing imported. A plugin imports its SDK only when its environment is used."""
    return _LISTING.format(sdks=set(sdks))


@dataclass(frozen=True)
class Listed:
    """One row of ``rlm environments``."""

    name: str
    distribution: str
    version: str
    capabilities: frozenset[str]


@dataclass(frozen=True)
class Listing:
    """What :func:`listing_script` printed: the environments listed, by name, and the
    SDK packages the listing imported."""

    rows: dict[str, Listed]
    sdks_loaded: list[str]

    @classmethod
    def parse(cls, output: str) -> Listing:
        """Read the script's output (``rlm environments`` columns are two spaces apart;
        an environment listed twice, or no ``sdks loaded`` line, is an ``AssertionError``)."""
        rows: dict[str, Listed] = {}
        loaded: list[str] | None = None
        for line in output.splitlines():
            if line.startswith("sdks loaded: "):
                loaded = ast.literal_eval(line.removeprefix("sdks loaded: "))
                continue
            cells = re.split(r"\s{2,}", line.strip())
            if len(cells) < 3 or cells[0] == "NAME" or cells[0].startswith("-"):
                continue
            if cells[0] in rows:
                raise AssertionError(f"{cells[0]} is listed twice:\n{output[-5000:]}")
            claims = cells[3].split(", ") if len(cells) > 3 else []
            rows[cells[0]] = Listed(cells[0], cells[1], cells[2], frozenset(claims))
        if loaded is None:
            raise AssertionError(f"the listing script did not finish:\n{output[-5000:]}")
        return cls(rows, loaded)


def list_environments(sdks: Iterable[str], python: str = sys.executable) -> Listing:
    """Run :func:`listing_script` with ``python`` (this interpreter by default): the
    listing, which must succeed (``AssertionError`` otherwise)."""
    done = subprocess.run(
        [python, "-c", listing_script(sdks)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return Listing.parse(done.stdout)


_COMPLETION = """
import rlm_core
from rlm_core import RLM
from rlm_core.environments import shipping  # only this project's rlm-core has it

cell = "answer.update(content=str(len(context)), ready=True)"
rlm = RLM(
    backend="scripted",
    backend_kwargs={{"responses": [f"```repl\\n{{cell}}\\n```"]}},
    environment={environment!r},
    environment_kwargs={settings!r},
)
try:
    print("answer:", rlm.completion("twelve chars").response)
finally:
    rlm.close()
print("core:", rlm_core.__file__)
"""


def completion_script(environment: str, settings: Mapping[str, Any] | None = None) -> str:
    """Python code that runs one completion on the environment registered as
    ``environment`` (with ``settings``), the scripted backend answering with one cell
    that sets the answer to the context's length; then prints ``answer: 12`` and ``core:``
    with the path of the ``rlm_core`` that ran (which must be rlm-core's: the script
    imports a module only it has)."""
    return _COMPLETION.format(environment=environment, settings=dict(settings or {}))


def printed(output: str) -> dict[str, str]:
    """The ``key: value`` lines of a script's output, by key (the last one wins)."""
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
