"""The conformance suite on the ``modal`` environment, against the fake Modal service."""

from __future__ import annotations

import pytest
from modal_fake import ModalFake
from modal_fixtures import modal_fake  # noqa: F401
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import (
    BridgeSecurityTests,
    CompletionTests,
    ContextTests,
    SubcallTests,
)


class TestModalConformance(EnvironmentTests):
    """Every standard test, the unmodified ``modal`` SDK talking to the fake service."""

    @pytest.fixture
    def environment_setup(self, modal_fake: ModalFake) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("modal", {"idle_timeout": 2})


class TestModalConformanceTLS(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The groups that exercise the bridge's wire again, with its pinned TLS over the
    relay: contexts up to 50 MiB, sub-calls, the token's checks, whole completions."""

    @pytest.fixture
    def environment_setup(self, modal_fake: ModalFake) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("modal", {"idle_timeout": 2, "tls": True}, label="modal+tls")
