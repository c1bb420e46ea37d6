"""The conformance suite on the ``ipython`` environment, in both kernel modes."""

from __future__ import annotations

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests


class TestInProcessConformance(EnvironmentTests):
    """Every standard test with cells run by an IPython shell in this process."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        return EnvironmentSetup("ipython", {}, label="ipython in_process")


class TestSubprocessConformance(EnvironmentTests):
    """Every standard test with cells run by an IPython shell in the agent's process."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        return EnvironmentSetup(
            "ipython", {"kernel_mode": "subprocess"}, label="ipython subprocess"
        )
