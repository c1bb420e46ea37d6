"""The rlm-conformance suite on the ``prime`` environment: on the fake, and live with a key."""

from __future__ import annotations

import os

import pytest
from prime_fake import FakePrime
from prime_fixtures import shared_fake_prime  # noqa: F401  (a fixture)
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import (
    BridgeSecurityTests,
    CompletionTests,
    ContextTests,
    SubcallTests,
)

pytestmark = pytest.mark.timeout(300)


class TestPrimeOnFake(EnvironmentTests):
    """Every standard test, through the unmodified SDK, against the wire-level fake (the
    default settings: egress off, so ``network_off`` is claimed and checked)."""

    @pytest.fixture
    def environment_setup(self, shared_fake_prime: FakePrime) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("prime", {}, label="prime (fake)")


class TestPrimeOnFakeTLS(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The groups that exercise the bridge's wire again, with its pinned TLS inside the
    relay over the live process: contexts up to 50 MiB, sub-calls, the token's checks,
    whole completions."""

    @pytest.fixture
    def environment_setup(self, shared_fake_prime: FakePrime) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("prime", {"tls": True}, label="prime+tls (fake)")


LIVE = bool(os.environ.get("PRIME_API_KEY")) and not os.environ.get("PRIME_API_BASE_URL")
"""Credentials for the real Prime are set (and no fake's URL is)."""


@pytest.mark.live
def test_live_credentials() -> None:
    """Says why the live suite below did not run."""
    if not LIVE:
        pytest.skip("PRIME_API_KEY is not set: the conformance suite on the real Prime did not run")


if LIVE:

    @pytest.mark.live
    class TestPrimeLive(EnvironmentTests):
        """Every standard test on the real Prime (the first run builds the plugin's
        image, hence the long start-up allowance)."""

        @pytest.fixture
        def environment_setup(self) -> EnvironmentSetup:
            return EnvironmentSetup("prime", {"startup_timeout": 1800.0}, label="prime (live)")
