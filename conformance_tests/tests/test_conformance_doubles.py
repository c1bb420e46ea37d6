"""The fake provider passes the whole suite (sandbox listing included), and its listing
and clean-up by tag behave as a provider's do."""

from __future__ import annotations

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.doubles import LocalAgentEnvironment, LocalAgentLauncher, RecordingSubcalls

from rlm_core.environments.base import Session

pytestmark = pytest.mark.timeout(300)


class TestLocalAgentOverStdio(EnvironmentTests):
    """Every standard test on the fake provider over the stdio carrier (binary framing):
    the path a cloud plugin's exec handle takes."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        return EnvironmentSetup(
            LocalAgentEnvironment,
            {"carrier": "stdio", "tag": "suite"},
            label="local-agent stdio",
        )


def test_listing_and_cleanup_by_tag() -> None:
    envs = [LocalAgentEnvironment(carrier="stdio", tag=tag) for tag in ("red", "red", "blue")]
    for env in envs:
        env.start(Session(subcalls=RecordingSubcalls()))
    try:
        red = LocalAgentLauncher.list_sandboxes(tag="red")
        blue = LocalAgentLauncher.list_sandboxes(tag="blue")
        assert red is not None and blue is not None
        assert len(red) == 2 and len(blue) == 1
        assert sorted(LocalAgentLauncher.cleanup(tag="red")) == sorted(red)
        assert LocalAgentLauncher.list_sandboxes(tag="red") == []
        assert LocalAgentLauncher.list_sandboxes(tag="blue") == blue
        assert LocalAgentLauncher.cleanup(ids=blue) == blue
        assert LocalAgentLauncher.list_sandboxes() == []
    finally:
        for env in envs:
            env.close()
