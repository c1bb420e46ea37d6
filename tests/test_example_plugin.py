"""rlm-example, the plugin built in docs/writing-a-plugin.md, set up as its author would.

The core, the conformance suite and the example are installed with a real, non-editable
``pip install`` into a fresh venv, without an index (the wheels of their dependencies come
from ``.venv/wheelhouse``, which ``make`` fills). In that venv, ``rlm environments`` lists
the plugin, an RLM selects it by its entry-point name, and the conformance suite and the
plugin's own tests pass. Every command runs in a session of its own; afterwards no process
of the venv is left running and its temporary directory holds nothing of ours.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from rlm_conformance.venvs import FreshVenv as Venv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path("docs") / "examples" / "rlm-example"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
TAG = "fresh-venv-test"


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


@pytest.fixture(scope="module")
def venv() -> Iterator[Venv]:
    """The fresh venv, with the three distributions installed from (a copy of) this
    checkout with a real, non-editable ``pip install``."""
    _wheelhouse_or_skip()
    made = Venv.create(WHEELHOUSE, ROOT)
    with made:
        made.install(
            str(made.sources), str(made.sources / "conformance_tests"), str(made.sources / EXAMPLE)
        )
        yield made
        leftovers = made.leftovers()
        assert not leftovers, f"left in the temporary directory: {leftovers}"


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
    # Its suite subclass (TestExample) runs the same tests `rlm conformance example` ran
    # above: collected, and its guard test run, but not the whole suite a second time.
    project = venv.sources / EXAMPLE
    result = venv.run(
        str(venv.bin / "pytest"), "-q", "-p", "no:cacheprovider",
        "-k", "not TestExample or STD-001", cwd=project,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:]
    assert _passed(result.stdout) >= 5, result.stdout[-3000:]
    assert "provided by: rlm-example 0.1.0" in result.stdout, result.stdout[-3000:]
