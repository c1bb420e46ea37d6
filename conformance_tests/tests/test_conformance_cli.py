"""``rlm conformance NAME``: the suite through the core's command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def rlm(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_core.cli", "conformance", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
        timeout=240,
        start_new_session=True,
    )


def test_a_run_prints_its_summary(tmp_path: object) -> None:
    done = rlm("local", "--", "-q", "-k", "CTX-001 or ISO-001 or REP-001", cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (
        "environment: local",
        "  tests: 3 selected, 2 ran, 2 passed, 0 failed, 1 skipped",
        "  skipped, capability not claimed: isolated (1)",
        "  verified: subcalls",
    ):
        assert line in done.stdout.splitlines(), done.stdout


def test_settings_reach_the_environment(tmp_path: object) -> None:
    done = rlm(
        "subprocess", "--kwargs", '{"cell_timeout": 30, "prewarm": false}',
        "--", "-q", "-k", "CEL-012", cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'environment: subprocess {"cell_timeout": 30, "prewarm": false}' in done.stdout


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("local", "--", "-k", "ISO"), 1, "NO conformance test ran"),
        (("local", "--kwargs", "[1]"), 2, "--kwargs must be a JSON object"),
        (("local", "--kwargs", "{nope"), 2, "--kwargs is not valid JSON"),
        (("no-such-environment",), 4, "unknown environment 'no-such-environment'"),
    ],
)
def test_failures_have_their_own_status(
    args: tuple[str, ...], status: int, message: str, tmp_path: object
) -> None:
    done = rlm(*args, cwd=str(tmp_path))
    assert done.returncode == status, done.stdout + done.stderr
    assert message in done.stdout + done.stderr
