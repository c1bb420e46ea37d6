"""The suite on the environment named by ``--rlm-environment`` (``pytest --pyargs
rlm_conformance --rlm-environment NAME``)."""

from __future__ import annotations

import pytest

from rlm_conformance.plugin import SELECTED_KEY
from rlm_conformance.setup import EnvironmentSetup
from rlm_conformance.suite import EnvironmentTests


class TestSelectedEnvironment(EnvironmentTests):
    """Every standard test, on the environment chosen on the command line."""

    @pytest.fixture
    def environment_setup(self, request: pytest.FixtureRequest) -> EnvironmentSetup:
        """The setup from ``--rlm-environment`` / ``--rlm-environment-kwargs``."""
        return request.config.stash[SELECTED_KEY]
