"""rlm-core and rlm-prime installed as a user would: the wheels of both are built from this
checkout and installed by name (``pip install rlm-core rlm-prime``) into a fresh venv with
no package index, only those wheels and the wheelhouse of their dependencies, so the
unrelated public ``rlm-core`` can never be the one installed. There ``rlm environments``
lists ``prime`` without importing the SDK, and ``RLM(environment="prime")`` resolves by
entry-point name and runs a completion against the fake service."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prime_fake import FakePrime
from prime_fixtures import fake_prime  # noqa: F401
from rlm_conformance.venvs import FreshVenv

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[3]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"

LISTING = textwrap.dedent(
    """
    import sys
    from rlm_core.cli import main
    code = main(["environments"])
    print("sdk loaded:", "prime_sandboxes" in sys.modules)
    raise SystemExit(code)
    """
)

COMPLETION = textwrap.dedent(
    """
    import rlm_core
    from rlm_core import RLM
    from rlm_core.environments import shipping  # only this project's rlm-core has it

    cell = "answer.update(content=str(len(context)), ready=True)"
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [f"```repl\\n{cell}\\n```"]},
        environment="prime",
    )
    try:
        print("answer:", rlm.completion("twelve chars").response)
    finally:
        rlm.close()
    print("core:", rlm_core.__file__)
    """
)


@pytest.fixture(scope="module")
def venv() -> Iterator[FreshVenv]:
    if not any(WHEELHOUSE.glob("prime_sandboxes-*.whl")):
        reason = (
            f"no prime_sandboxes wheel in {WHEELHOUSE}: fill the wheelhouse with `make wheelhouse`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with FreshVenv.create(WHEELHOUSE, ROOT) as made:
        wheels = made.build_wheels("", "plugins/rlm-prime")
        made.install("--find-links", str(wheels), "rlm-core", "rlm-prime")
        yield made
        assert made.leftovers() == []


def test_listed_without_importing_the_sdk(venv: FreshVenv) -> None:
    done = venv.run("python", "-c", LISTING)
    assert done.returncode == 0, done.stdout
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("prime "))
    assert row[1:3] == ["rlm-prime", "0.1.0"], row
    assert "isolated" in " ".join(row[3:]), row
    assert "sdk loaded: False" in done.stdout


def test_selected_by_name_against_the_fake(venv: FreshVenv, fake_prime: FakePrime) -> None:  # noqa: F811
    with tempfile.TemporaryDirectory(prefix="rlm-prime-home-") as home:
        done = venv.run("python", "-c", COMPLETION, env={**fake_prime.environ(), "HOME": home})
    assert done.returncode == 0, done.stdout
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert said["answer"] == "12"
    assert said["core"].startswith(str(venv.root / "venv" / "lib")), said
    assert fake_prime.live() == [] and fake_prime.builds == 1
