"""Test cloud plugins at the ends of their SDK ranges that ``.venv`` does not hold.

``.venv`` holds every plugin at once, resolved together, as a user gets them from
``pip install rlm-core rlm-modal rlm-e2b rlm-daytona rlm-prime``; ``make test`` tests that.
Two ends of each plugin's SDK range can be missing from it:

* ``newest``: an SDK held below the newest release its plugin admits, because another
  plugin's SDK conflicts with that release (every e2b from 2.57 needs ``connectrpc>=0.12.1``,
  every prime-sandboxes up to 0.5.1 needs ``connectrpc<0.12``; together pip resolves e2b
  2.56). Someone who installs that plugin alone gets the newest, so it is tested again in a
  venv of its own, ``.venv-newest/<plugin>``, with the SDK pinned to it. ``make test`` runs
  this, and says which plugins it concerns and why.
* ``floor``: the oldest release the range admits (``modal>=1.6.1,<2`` -> ``modal==1.6.1``),
  in ``.venv-floor/<plugin>``; ``make sdk-floor`` runs this.

In both, the venv gets rlm-core, rlm-conformance and the plugin editable, and the plugin's
tests run there. The wire-level fakes speak the protocol of the SDK installed beside them,
so an SDK whose wire changed fails its tests.

    .venv/bin/python .ci/sdk_range.py newest             # every plugin .venv holds back
    .venv/bin/python .ci/sdk_range.py floor rlm-e2b      # one plugin's floor
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NOT_SDKS = {"rlm-core", "rlm-conformance"}
AVAILABLE = re.compile(r"^Available versions:\s*(?P<versions>.+)$", re.MULTILINE)


def sdk_requirements(plugin: Path) -> list[Requirement]:
    """The provider SDKs a plugin's pyproject requires (every dependency but rlm-core's own
    distributions)."""
    data = tomllib.loads((plugin / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [Requirement(text) for text in data["project"].get("dependencies", [])]
    return [req for req in requirements if req.name.lower() not in NOT_SDKS]


def floor_version(requirement: Requirement) -> str | None:
    """The ``>=`` bound of ``requirement``, if it has one."""
    for spec in requirement.specifier:
        if spec.operator == ">=":
            return spec.version
    return None


def newest_version(requirement: Requirement) -> str | None:
    """The newest final release on the package index that ``requirement`` admits."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", requirement.name],
        capture_output=True,
        text=True,
    )
    match = AVAILABLE.search(listed.stdout)
    if match is None:
        raise SystemExit(f"pip could not list the releases of {requirement.name}:\n{listed.stderr}")
    versions = [v.strip() for v in match.group("versions").split(",")]
    admitted = [Version(v) for v in requirement.specifier.filter(versions)]
    return str(max(admitted)) if admitted else None


def installed_version(name: str) -> str | None:
    """The version of ``name`` in ``.venv`` (the interpreter running this script)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pins_at(plugin: Path, end: str) -> list[str]:
    """``name==version`` for each of the plugin's SDKs at ``end``; for ``newest``, only the
    SDKs that ``.venv`` holds at another version (printing why)."""
    pins = []
    for requirement in sdk_requirements(plugin):
        if end == "floor":
            version = floor_version(requirement)
        else:
            version = newest_version(requirement)
            held = installed_version(requirement.name)
            if version is not None and held == version:
                print(f"{plugin.name}: .venv holds {requirement.name} {held}, the newest it admits")
                continue
            print(
                f"{plugin.name}: .venv holds {requirement.name} {held} (resolved beside the "
                f"other plugins); {requirement.name} {version} is the newest it admits on its own"
            )
        if version is not None:
            pins.append(f"{requirement.name}=={version}")
    return pins


def run(plugin: Path, end: str) -> int:
    """Test ``plugin`` at ``end`` of its SDK range in a venv of its own; pytest's status."""
    pins = pins_at(plugin, end)
    if not pins:
        return 0
    home = ROOT / f".venv-{end}" / plugin.name
    python = home / "bin" / "python"
    if not python.exists():
        venv.create(home, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    editable = [f"{ROOT}[tls]", str(ROOT / "conformance_tests"), f"{plugin}[test]"]
    extras = ["pytest-xdist"]
    subprocess.run([*pip, *(f"-e{path}" for path in editable), *extras, *pins], check=True)
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    pairs = (line.split("==", 1) for line in frozen if "==" in line)
    installed = {canonicalize_name(name): version for name, version in pairs}
    for pin in pins:
        name, version = pin.split("==")
        if Version(installed.get(canonicalize_name(name), "0a0")) != Version(version):
            print(f"{plugin.name}: {pin} was not what got installed", flush=True)
            return 1
    print(f"{plugin.name}: tests with {', '.join(pins)} in {home.relative_to(ROOT)}", flush=True)
    pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "auto"]
    return subprocess.run([*pytest, str(plugin / "tests")], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("end", choices=["newest", "floor"], help="which end of the ranges")
    parser.add_argument("plugins", nargs="*", help="plugin directories' names (rlm-modal ...)")
    args = parser.parse_args(argv)
    names = args.plugins or sorted(p.name for p in (ROOT / "plugins").iterdir())
    status = 0
    for name in names:
        plugin = ROOT / "plugins" / name
        if (plugin / "pyproject.toml").exists():
            status = max(status, run(plugin, args.end))
    return status


if __name__ == "__main__":
    sys.exit(main())
