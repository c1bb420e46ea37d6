"""The conformance suite on the ``bwrap`` environment (real bubblewrap)."""

from __future__ import annotations

import pytest
from bwrap_support import require_bwrap
from rlm_conformance import EnvironmentSetup, EnvironmentTests

require_bwrap()

pytestmark = pytest.mark.timeout(300)


class TestBwrapConformance(EnvironmentTests):
    """Every standard test, the escape corpus included, in a bubblewrap sandbox."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        return EnvironmentSetup("bwrap")
