"""The fake sandbox (isolated local processes with the shipped agent) passes the whole
suite, its isolation and network claims included."""

from __future__ import annotations

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.doubles import FakeSandboxEnvironment

pytestmark = pytest.mark.timeout(300)


class TestFakeSandbox(EnvironmentTests):
    """Every standard test on an isolated fake sandbox without a network."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        return EnvironmentSetup(FakeSandboxEnvironment, label="fake-sandbox")
