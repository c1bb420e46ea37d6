"""The rlm-conformance suite on the ``e2b`` environment: on the fake, and live with a key."""

from __future__ import annotations

import os

import pytest
from e2b_fake import FakeE2B
from e2b_fixtures import shared_fake_e2b  # noqa: F401  (a fixture)
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import (
    BridgeSecurityTests,
    CompletionTests,
    ContextTests,
    SubcallTests,
)

pytestmark = pytest.mark.timeout(300)


class TestE2BOnFake(EnvironmentTests):
    """Every standard test, through the unmodified SDK, against the wire-level fake (the
    default settings: egress off, so ``network_off`` is claimed and checked)."""

    @pytest.fixture
    def environment_setup(self, shared_fake_e2b: FakeE2B) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("e2b", {"lease_interval": 5.0}, label="e2b (fake)")


class TestE2BOnFakeTLS(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The groups that exercise the bridge's wire again, with its pinned TLS inside the
    base64-framed relay: contexts up to 50 MiB, sub-calls, the token's checks, whole
    completions."""

    @pytest.fixture
    def environment_setup(self, shared_fake_e2b: FakeE2B) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("e2b", {"lease_interval": 5.0, "tls": True}, label="e2b+tls (fake)")


LIVE = bool(os.environ.get("E2B_API_KEY")) and not os.environ.get("E2B_API_URL")
"""Credentials for the real E2B are set (and no fake's URL is)."""


@pytest.mark.live
def test_live_credentials() -> None:
    """Says why the live suite below did not run."""
    if not LIVE:
        pytest.skip("E2B_API_KEY is not set: the conformance suite on the real E2B did not run")


if LIVE:

    @pytest.mark.live
    class TestE2BLive(EnvironmentTests):
        """Every standard test on the real E2B (the first run builds the plugin's
        template, hence the long start-up allowance)."""

        @pytest.fixture
        def environment_setup(self) -> EnvironmentSetup:
            return EnvironmentSetup("e2b", {"startup_timeout": 600.0}, label="e2b (live)")
