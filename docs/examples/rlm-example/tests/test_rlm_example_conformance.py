"""The shared conformance suite on the example environment: every standard test, skipped
only for capabilities the environment does not claim."""

from __future__ import annotations

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_example.environment import ExampleEnvironment

TAG = "rlm-example-tests"


class TestExample(EnvironmentTests):
    """The example environment with its default settings."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        """Built from the class, so the tests run from a checkout too (installed, the
        entry-point name ``"example"`` works the same)."""
        return EnvironmentSetup(ExampleEnvironment, {"tag": TAG})
