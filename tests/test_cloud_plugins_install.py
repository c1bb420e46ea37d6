"""All four cloud plugins in one venv, installed as a user would:
``pip install rlm-core rlm-modal rlm-e2b rlm-daytona rlm-prime``.

Their SDKs' own requirements conflict at their newest releases (every e2b from 2.57 needs
``connectrpc>=0.12.1``, every prime-sandboxes up to 0.5.1 ``connectrpc<0.12``), so rlm-e2b
admits e2b from 2.56, the release that installs beside prime-sandboxes. This installs the
five distributions by name into a fresh venv, from wheels built from this checkout and the
wheelhouse (``.venv/wheelhouse``, filled from the package index by one resolution of every
plugin together), so the unrelated public ``rlm-core`` can never be the one installed. It
checks that pip finds no conflict, that every SDK imports beside the others, that ``rlm
environments`` lists all four with their capabilities without importing any SDK, and that
each environment, selected by its entry-point name, runs a completion against its own
wire-level fake (the one of ``plugins/rlm-NAME/tests``) with the venv's rlm-core. ``make
test`` runs each plugin's own tests in ``.venv``, which holds the same resolution, and e2b's
newest release in a venv of its own (``.ci/sdk_range.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from rlm_conformance.venvs import (
    Listing,
    completion_script,
    listing_script,
    plugins_venv,
    printed,
    require_wheels,
)

# The plugins' fakes and their fixtures, as their own tests import them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/rlm-modal/tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/rlm-e2b/tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/rlm-daytona/tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins/rlm-prime/tests"))

from daytona_fixtures import fake_daytona  # noqa: F401  (fixtures)
from e2b_fixtures import fake_e2b  # noqa: F401
from modal_fixtures import modal_fake  # noqa: F401
from prime_fixtures import fake_prime  # noqa: F401

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
PLUGINS = {"modal": "modal", "e2b": "e2b", "daytona": "daytona", "prime": "prime_sandboxes"}
"""Environment name -> the import name of its plugin's SDK."""

SETTINGS: dict[str, dict[str, Any]] = {"modal": {"idle_timeout": 5}}
"""Environment name -> the settings of its completion."""

IMPORTS = "import {}; print('imported')".format(", ".join(PLUGINS.values()))


def test_installed_together_each_selected_by_name(
    fake_e2b: Any,  # noqa: F811
    fake_daytona: Any,  # noqa: F811
    fake_prime: Any,  # noqa: F811
    modal_fake: Any,  # noqa: F811
) -> None:
    """One test, so that the venv is built once (xdist would build one per worker that ran
    a part): the install, the listing, then a completion per environment."""
    fakes = {"modal": modal_fake, "e2b": fake_e2b, "daytona": fake_daytona, "prime": fake_prime}
    require_wheels(WHEELHOUSE, *PLUGINS.values(), hint="fill it with `make wheelhouse`")
    with plugins_venv(ROOT, WHEELHOUSE, *PLUGINS) as venv:
        done = venv.run("python", "-m", "pip", "check")
        assert done.returncode == 0, done.stdout
        assert "No broken requirements found" in done.stdout

        done = venv.run("python", "-c", IMPORTS)  # every SDK beside the others
        assert done.returncode == 0, done.stdout
        assert done.stdout.strip().endswith("imported"), done.stdout

        done = venv.run("python", "-c", listing_script(PLUGINS.values()))
        assert done.returncode == 0, done.stdout
        listing = Listing.parse(done.stdout)
        for name in PLUGINS:
            row = listing.rows[name]
            assert (row.distribution, row.version) == (f"rlm-{name}", "0.1.0"), row
            assert {"isolated", "network_off"} <= row.capabilities, row
        assert listing.sdks_loaded == [], done.stdout  # listed without importing an SDK

        for name, fake in fakes.items():
            # Resolved by entry-point name in the venv, a completion on the fake; the sandbox
            # is gone afterwards (modal's fixture checks that itself), and the plugin's image
            # or template was built once, by that completion.
            script = completion_script(name, SETTINGS.get(name))
            done = venv.run("python", "-c", script, env=fake.environ())
            assert done.returncode == 0, f"{name}: {done.stdout}"
            said = printed(done.stdout)
            assert said["answer"] == "12", (name, said)
            assert said["core"].startswith(str(venv.root / "venv" / "lib")), (name, said)
            if name != "modal":
                assert fake.live() == [], name
            if name in ("e2b", "prime"):
                assert fake.builds == 1, name
