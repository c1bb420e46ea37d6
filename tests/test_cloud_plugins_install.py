"""All four cloud plugins in one venv, installed as a user would:
``pip install rlm-core rlm-modal rlm-e2b rlm-daytona rlm-prime``.

Their SDKs' own requirements conflict at their newest releases (every e2b from 2.57 needs
``connectrpc>=0.12.1``, every prime-sandboxes up to 0.5.1 ``connectrpc<0.12``), so rlm-e2b
admits e2b from 2.56, the release that installs beside prime-sandboxes. This installs the
five distributions by name into a fresh venv, from wheels built from this checkout and the
wheelhouse (``.venv/wheelhouse``, filled from the package index by one resolution of every
plugin together), and checks that pip finds no conflict, that every SDK imports beside the
others, and that ``rlm environments`` lists all four with their capabilities without
importing any SDK. ``make test`` runs each plugin's own tests in ``.venv``, which holds the
same resolution, and e2b's newest release in a venv of its own (``.ci/sdk_range.py``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from rlm_conformance.venvs import FreshVenv

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
PLUGINS = {"modal": "modal", "e2b": "e2b", "daytona": "daytona", "prime": "prime_sandboxes"}
"""Environment name -> the import name of its plugin's SDK."""

LISTING = textwrap.dedent(
    """
    import sys
    from rlm_core.cli import main
    code = main(["environments"])
    print("sdks loaded:", sorted(m for m in {sdks!r} if m in sys.modules))
    raise SystemExit(code)
    """
).format(sdks=sorted(PLUGINS.values()))

IMPORTS = "import {}; print('imported')".format(", ".join(PLUGINS.values()))


@pytest.fixture(scope="module")
def venv() -> Iterator[FreshVenv]:
    missing = [sdk for sdk in PLUGINS.values() if not any(WHEELHOUSE.glob(f"{sdk}-*.whl"))]
    if missing:
        reason = f"no wheel of {missing} in {WHEELHOUSE}: fill it with `make wheelhouse`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with FreshVenv.create(WHEELHOUSE, ROOT) as made:
        projects = [f"plugins/rlm-{name}" for name in PLUGINS]
        wheels = made.build_wheels("", *projects)
        made.install("--find-links", str(wheels), "rlm-core", *(f"rlm-{n}" for n in PLUGINS))
        yield made
        assert made.leftovers() == []


def test_pip_finds_no_conflict(venv: FreshVenv) -> None:
    done = venv.run("python", "-m", "pip", "check")
    assert done.returncode == 0, done.stdout
    assert "No broken requirements found" in done.stdout


def test_every_sdk_imports_beside_the_others(venv: FreshVenv) -> None:
    done = venv.run("python", "-c", IMPORTS)
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("imported"), done.stdout


def test_all_four_listed_without_importing_an_sdk(venv: FreshVenv) -> None:
    done = venv.run("python", "-c", LISTING)
    assert done.returncode == 0, done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for name in PLUGINS:
        row = rows[name]
        assert row[1:3] == [f"rlm-{name}", "0.1.0"], row
        claims = " ".join(row[3:])
        assert "isolated" in claims and "network_off" in claims, row
    assert "sdks loaded: []" in done.stdout
