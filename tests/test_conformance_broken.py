"""The conformance suite fails environments that break their promises: one that claims
``network_off`` with the network on, one that leaves a process running after close, one
that drops stderr, one that loses state between cells. The unbroken environment each one
is built on passes the same tests (the control)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

SUITE = """
import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from {module} import {name}

class TestBroken(EnvironmentTests):
    @pytest.fixture
    def environment_setup(self):
        return EnvironmentSetup({environment}, label={label!r})
"""


def run(
    pytester: pytest.Pytester, environment: str, ids: str, module: str = ""
) -> pytest.RunResult:
    name = environment if module else "EnvironmentSetup"
    source = SUITE.format(
        module=module or "rlm_conformance",
        name=name,
        environment=environment if module else repr(environment),
        label=environment,
    )
    pytester.makepyfile(test_broken_suite=source)
    return pytester.runpytest("-p", "no:cacheprovider", "-k", ids)


def test_a_false_network_off_claim_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, "ClaimsNetworkOff", "ISO-005 or ISO-006", "broken_environments")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*the sandbox reached 127.0.0.1:*",
            "*the sandbox reached */host.sock*",
            "  claimed but FAILED: network_off",
            "  failed tests: ISO-005, ISO-006",
        ]
    )


def test_a_process_left_running_after_close_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, "LeaksOnClose", "LIF-006", "broken_environments")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*still running 15s after close(): *pid *rlm_core.agent*"])
    control = run(pytester, "subprocess", "LIF-006")
    control.assert_outcomes(passed=1)


def test_dropped_stderr_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, "DropsStderr", "CEL-002 or CEL-003", "broken_environments")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["  failed tests: CEL-002, CEL-003"])
    control = run(pytester, "local", "CEL-002 or CEL-003")
    control.assert_outcomes(passed=2)


def test_state_lost_between_cells_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, "LosesState", "CEL-005 or CEL-006 or LIF-005", "broken_environments")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["  failed tests: CEL-005, CEL-006, LIF-005"])
    control = run(pytester, "local", "CEL-005 or CEL-006 or LIF-005")
    control.assert_outcomes(passed=3)
