"""Settings are validated, capabilities declared, and ``rlm environments`` lists bwrap."""

from __future__ import annotations

import io

import pytest
from rlm_bwrap import BwrapEnvironment

from rlm_core import RLM, ConfigurationError
from rlm_core.cli import main
from rlm_core.environments.base import DISK_LIMIT, ISOLATED, MEMORY_LIMIT, NETWORK_OFF, TIMEOUT


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"max_proceses": 10}, ["unknown setting 'max_proceses'", "did you mean 'max_processes'"]),
        ({"disk_limit_mb": 0}, ["disk_limit_mb", ">= 1"]),
        ({"disk_limit_mb": "8"}, ["disk_limit_mb", "str"]),
        ({"max_processes": 2}, ["max_processes", ">= 8"]),
        ({"max_open_files": 10}, ["max_open_files", ">= 64"]),
        ({"cpu_time_limit": 0}, ["cpu_time_limit", ">= 1"]),
        ({"memory_limit_mb": 0}, ["memory_limit_mb", ">= 1"]),
        ({"packages": "numpy"}, ["packages", "str"]),
    ],
)
def test_settings_are_refused_clearly(settings: dict[str, object], words: list[str]) -> None:
    for build in (
        lambda: BwrapEnvironment(**settings),  # type: ignore[arg-type]
        lambda: RLM(
            backend="scripted",
            backend_kwargs={"responses": ["unused"]},
            environment="bwrap",
            environment_kwargs=settings,
        ),
    ):
        with pytest.raises(ConfigurationError) as caught:
            build()
        assert all(word in str(caught.value) for word in words), str(caught.value)


def test_capabilities() -> None:
    claimed = BwrapEnvironment().capabilities
    assert {ISOLATED, NETWORK_OFF, DISK_LIMIT, MEMORY_LIMIT, TIMEOUT} <= claimed


def test_rlm_environments_lists_bwrap() -> None:
    out = io.StringIO()
    assert main(["environments"], stdout=out, stderr=out) == 0
    line = next(row for row in out.getvalue().splitlines() if row.startswith("bwrap "))
    assert "rlm-bwrap" in line
    for capability in ("disk_limit", "isolated", "network_off", "timeout"):
        assert capability in line
