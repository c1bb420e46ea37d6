"""The conformance suite on the ``modal`` environment, against the fake Modal service."""

from __future__ import annotations

import pytest
from modal_fake import ModalFake
from modal_fixtures import modal_fake  # noqa: F401
from rlm_conformance import EnvironmentSetup, EnvironmentTests


class TestModalConformance(EnvironmentTests):
    """Every standard test, the unmodified ``modal`` SDK talking to the fake service."""

    @pytest.fixture
    def environment_setup(self, modal_fake: ModalFake) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("modal", {"idle_timeout": 2})


class TestModalConformanceTLS(EnvironmentTests):
    """The suite again with the bridge's pinned TLS over the relay."""

    @pytest.fixture
    def environment_setup(self, modal_fake: ModalFake) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("modal", {"idle_timeout": 2, "tls": True}, label="modal+tls")
