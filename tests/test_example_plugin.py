"""rlm-example, the plugin built in docs/writing-a-plugin.md, set up as its author would.

The core, the conformance suite and the example are installed with a real, non-editable
``pip install`` into a fresh venv, without an index (the wheels of their dependencies come
from ``.venv/wheelhouse``, which ``make`` fills). In that venv, ``rlm environments`` lists
the plugin, an RLM selects it by its entry-point name, and the conformance suite and the
plugin's own tests pass. Every command runs in a session of its own; afterwards no process
of the venv is left running and its temporary directory holds nothing of ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path("docs") / "examples" / "rlm-example"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
TAG = "fresh-venv-test"
SETTLE = 30.0
"""Seconds the venv's processes may take to end after the command that started them."""


# -- the guide's excerpts -----------------------------------------------------------------

EXCERPT = re.compile(r"^```\w*\n# rlm-example/(?P<path>\S+)\n(?P<body>.*?)^```", re.M | re.S)


def test_guide_excerpts_are_verbatim() -> None:
    """Every block of the guide headed ``# rlm-example/<file>`` is a piece of that file."""
    excerpts = list(EXCERPT.finditer(GUIDE.read_text(encoding="utf-8")))
    assert len(excerpts) >= 5
    for match in excerpts:
        source = (ROOT / EXAMPLE / match["path"]).read_text(encoding="utf-8")
        assert match["body"] in source, f"the guide's excerpt of {match['path']} is out of date"


# -- a fresh venv ---------------------------------------------------------------------------


@dataclass
class Venv:
    """A fresh venv with rlm-core, rlm-conformance and rlm-example installed."""

    root: Path
    """The temporary directory holding everything (the venv, the sources, TMPDIR)."""
    bin: Path
    sources: Path
    tmp: Path

    def env(self) -> dict[str, str]:
        """The host's environment without its Python and pip settings: TMPDIR and pip's
        configuration are the test's own, and the venv comes first on PATH."""
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
        self, *argv: str, cwd: Path | None = None, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in its own session; then check it left no process running."""
        process = subprocess.Popen(
            argv,
            cwd=cwd or self.root,
            env=self.env(),
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
            pytest.fail(f"{argv} ran past {timeout:g}s:\n{output[-5000:]}")
        finally:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        left = self.processes(SETTLE)
        assert not left, f"{argv} left processes running: {left}"
        return subprocess.CompletedProcess(argv, process.returncode, output, "")

    def processes(self, settle: float = 0.0) -> list[str]:
        """Processes of this venv still running after up to ``settle`` seconds (their
        command lines name the venv's directory: its interpreter, an agent, a cell's child);
        whatever is still there then is killed and reported."""
        deadline = time.monotonic() + settle
        while True:
            found = _running_with(str(self.root))
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid, _ in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return [f"pid {pid}: {line[:200]}" for pid, line in found]


def _running_with(marker: str) -> list[tuple[int, str]]:
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


def _wheelhouse_or_skip() -> None:
    if WHEELHOUSE.is_dir() and any(WHEELHOUSE.glob("*.whl")):
        return
    reason = (
        f"no wheels in {WHEELHOUSE}: the fresh venv installs without an index; "
        "fill it with `make wheelhouse` (the venv set-up, `make`, does it too)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


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


@pytest.fixture(scope="module")
def venv() -> Iterator[Venv]:
    """The fresh venv, with the three distributions installed from (a copy of) this
    checkout: the build writes build/ and egg-info directories next to the sources, and
    those belong in the temporary directory, not in the working tree."""
    _wheelhouse_or_skip()
    root = Path(tempfile.mkdtemp(prefix="plugin-venv-"))
    made = Venv(root, root / "venv" / "bin", root / "src", root / "tmp")
    try:
        made.tmp.mkdir()
        shutil.copytree(ROOT, made.sources, ignore=_ignored, symlinks=True)
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
        installed = made.run(
            str(made.bin / "python"), "-m", "pip", "install", "--no-index",
            "--find-links", str(WHEELHOUSE),
            str(made.sources),
            str(made.sources / "conformance_tests"),
            str(made.sources / EXAMPLE),
        )  # fmt: skip
        assert installed.returncode == 0, installed.stdout[-5000:]
        yield made
        leftovers = [p.name for p in made.tmp.iterdir() if not p.name.startswith("pytest-of-")]
        assert not leftovers, f"left in the temporary directory: {leftovers}"
    finally:
        left = made.processes()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left running: {left}"


# -- what a plugin author checks ----------------------------------------------------------


@pytest.mark.timeout(900)
def test_listed_with_its_distribution(venv: Venv) -> None:
    result = venv.run(str(venv.bin / "rlm"), "environments")
    assert result.returncode == 0, result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["example", "rlm-example", "0.1.0"] in [row[:3] for row in rows], result.stdout
    cleanup = venv.run(str(venv.bin / "rlm"), "cleanup", "example")
    assert cleanup.returncode == 0 and "0 running" in cleanup.stdout, cleanup.stdout


COMPLETION = textwrap.dedent(
    """
    import os, rlm_core, rlm_example
    from rlm_core import RLM
    from rlm_example.launcher import ExampleLauncher

    cell = "import os\\nanswer.update(content=f'{len(context)} {os.getcwd()}', ready=True)"
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [f"```repl\\n{cell}\\n```"]},
        environment="example",
        environment_kwargs={"tag": TAG, "cell_timeout": 30},
    )
    try:
        print("answer:", rlm.completion("twelve chars").response)
    finally:
        rlm.close()
    print("left:", ExampleLauncher.list_sandboxes(tag=TAG))
    print("core:", rlm_core.__file__)
    print("plugin:", rlm_example.__file__)
    """
).replace("TAG", repr(TAG))


@pytest.mark.timeout(900)
def test_selected_by_name_runs_a_completion(venv: Venv) -> None:
    result = venv.run(str(venv.bin / "python"), "-c", COMPLETION)
    assert result.returncode == 0, result.stdout
    said = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert re.fullmatch(rf"12 {re.escape(str(venv.tmp))}/rlm-example-\w+", said["answer"])
    assert said["left"] == "[]"
    site = str(venv.root / "venv" / "lib")
    assert said["core"].startswith(site) and said["plugin"].startswith(site), said


def _passed(output: str) -> int:
    found = re.search(r"(\d+) passed", output.splitlines()[-1] if output else "")
    return int(found.group(1)) if found else 0


@pytest.mark.timeout(900)
def test_conformance_suite_passes(venv: Venv) -> None:
    result = venv.run(str(venv.bin / "rlm"), "conformance", "example", "--", "-q")
    assert result.returncode == 0, result.stdout[-8000:]
    assert _passed(result.stdout) >= 60, result.stdout[-3000:]
    summary = result.stdout[result.stdout.index("rlm-conformance") :]
    assert "environment: example\n" in summary
    assert "provided by: rlm-example 0.1.0" in summary
    verified = re.search(r"verified: (.*)", summary)
    assert verified is not None and "separate_process" in verified.group(1), summary


@pytest.mark.timeout(900)
def test_a_setting_adds_a_capability_the_suite_verifies(venv: Venv) -> None:
    result = venv.run(
        str(venv.bin / "rlm"), "conformance", "example",
        "--kwargs", '{"memory_limit_mb": 2000}', "--", "-q", "-k", "CEL-016",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:]
    assert re.search(r"verified: memory_limit\b", result.stdout), result.stdout[-3000:]


@pytest.mark.timeout(900)
def test_the_plugins_own_tests_pass(venv: Venv) -> None:
    project = venv.sources / EXAMPLE
    result = venv.run(str(venv.bin / "pytest"), "-q", "-p", "no:cacheprovider", cwd=project)
    assert result.returncode == 0, result.stdout[-8000:]
    assert _passed(result.stdout) >= 60, result.stdout[-3000:]
    assert "provided by: rlm-example 0.1.0" in result.stdout, result.stdout[-3000:]
