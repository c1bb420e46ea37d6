"""Run each plugin's tests against the oldest SDK release its pyproject admits.

``make test`` tests the newest release in each plugin's range (what a fresh install gets);
this tests the other end. For every plugin named (default: every plugin under ``plugins/``
whose dependencies name a provider SDK with a lower bound), it makes a venv under
``.venv-floor/``, installs rlm-core, rlm-conformance and the plugin editable with the SDK
pinned to its lower bound (``modal>=1.6,<1.7`` -> ``modal==1.6.0``), and runs the plugin's
tests there (the wire-level fakes speak whatever protocol that SDK speaks, so a floor
that is too low fails here). The fresh-venv install tests are left out: they install
from ``.venv/wheelhouse``, which holds the newest releases.

    .venv/bin/python .ci/sdk_floor.py                 # every plugin
    .venv/bin/python .ci/sdk_floor.py rlm-e2b         # one

``make sdk-floor`` runs it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SDKS = {"rlm-core", "rlm-conformance"}
LOWER = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<spec>.*)$")


def floor_pin(requirement: str) -> str | None:
    """``name==X.Y.Z`` for a requirement with a ``>=X.Y[.Z]`` bound, else ``None``."""
    match = LOWER.match(requirement.strip())
    if match is None:
        return None
    for part in match.group("spec").split(","):
        part = part.strip()
        if part.startswith(">="):
            version = part[2:].strip()
            if version.count(".") == 1:
                version += ".0"
            return f"{match.group('name')}=={version}"
    return None


def sdk_pins(plugin: Path) -> list[str]:
    """The floor pins of a plugin's provider SDKs."""
    data = tomllib.loads((plugin / "pyproject.toml").read_text(encoding="utf-8"))
    pins = []
    for requirement in data["project"].get("dependencies", []):
        name = LOWER.match(requirement.strip())
        if name is None or name.group("name").lower() in NOT_SDKS:
            continue
        pin = floor_pin(requirement)
        if pin is not None:
            pins.append(pin)
    return pins


def run(plugin: Path) -> int:
    """Build the floor venv of ``plugin`` and run its tests; the pytest exit status."""
    pins = sdk_pins(plugin)
    if not pins:
        print(f"{plugin.name}: no provider SDK with a lower bound", flush=True)
        return 0
    home = ROOT / ".venv-floor" / plugin.name
    python = home / "bin" / "python"
    if not python.exists():
        venv.create(home, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    editable = [f"{ROOT}[tls]", str(ROOT / "conformance_tests"), f"{plugin}[test]"]
    subprocess.run([*pip, *(f"-e{path}" for path in editable), *pins], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for pin in pins:
        if pin.lower() not in (line.lower() for line in installed):
            print(f"{plugin.name}: {pin} was not what got installed", flush=True)
            return 1
    print(f"{plugin.name}: tests with {', '.join(pins)}", flush=True)
    pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    selection = [str(plugin / "tests"), "-k", "not install"]
    return subprocess.run([*pytest, *selection], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugins", nargs="*", help="plugin directories' names (rlm-modal ...)")
    args = parser.parse_args(argv)
    names = args.plugins or sorted(p.name for p in (ROOT / "plugins").iterdir())
    status = 0
    for name in names:
        plugin = ROOT / "plugins" / name
        if (plugin / "pyproject.toml").exists():
            status = max(status, run(plugin))
    return status


if __name__ == "__main__":
    sys.exit(main())
