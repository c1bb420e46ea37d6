"""The rlm-conformance suite on the ``daytona`` environment: on the fake, and live with a key."""

from __future__ import annotations

import os

import pytest
from daytona_fake import FakeDaytona
from daytona_fixtures import QUICK, shared_fake_daytona  # noqa: F401  (a fixture)
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import (
    BridgeSecurityTests,
    CompletionTests,
    ContextTests,
    SubcallTests,
)

pytestmark = pytest.mark.timeout(300)


class TestDaytonaOnFake(EnvironmentTests):
    """Every standard test, through the unmodified SDK, against the wire-level fake (the
    default settings: the PTY carrier, egress blocked, so ``network_off`` is claimed and
    checked)."""

    @pytest.fixture
    def environment_setup(self, shared_fake_daytona: FakeDaytona) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup("daytona", dict(QUICK), label="daytona (fake)")


class TestDaytonaOnFakeTLS(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The groups that exercise the bridge's wire again, with its pinned TLS inside the
    PTY relay: contexts up to 50 MiB, sub-calls, the token's checks, whole completions."""

    @pytest.fixture
    def environment_setup(self, shared_fake_daytona: FakeDaytona) -> EnvironmentSetup:  # noqa: F811
        settings = {**QUICK, "tls": True}
        return EnvironmentSetup("daytona", settings, label="daytona+tls (fake)")


class TestDaytonaSessionOnFake(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The same groups over the other carrier: a session command, its logs WebSocket and
    one input POST per write (base64 framing)."""

    @pytest.fixture
    def environment_setup(self, shared_fake_daytona: FakeDaytona) -> EnvironmentSetup:  # noqa: F811
        settings = {**QUICK, "exec_mode": "session"}
        return EnvironmentSetup("daytona", settings, label="daytona session (fake)")


class TestDaytonaSessionOnFakeTLS(
    ContextTests, SubcallTests, BridgeSecurityTests, CompletionTests, EnvironmentFixtures
):
    """The session carrier with the bridge's pinned TLS."""

    @pytest.fixture
    def environment_setup(self, shared_fake_daytona: FakeDaytona) -> EnvironmentSetup:  # noqa: F811
        settings = {**QUICK, "exec_mode": "session", "tls": True}
        return EnvironmentSetup("daytona", settings, label="daytona session+tls (fake)")


LIVE = bool(os.environ.get("DAYTONA_API_KEY")) and "127.0.0.1" not in os.environ.get(
    "DAYTONA_API_URL", ""
)
"""Credentials for the real Daytona are set (and no fake's URL is)."""


@pytest.mark.live
def test_live_credentials() -> None:
    """Says why the live suite below did not run."""
    if not LIVE:
        pytest.skip(
            "DAYTONA_API_KEY is not set: the conformance suite on the real Daytona did not run"
        )


if LIVE:

    @pytest.mark.live
    class TestDaytonaLive(EnvironmentTests):
        """Every standard test on the real Daytona (the first run builds the plugin's
        image, hence the long start-up allowance)."""

        @pytest.fixture
        def environment_setup(self) -> EnvironmentSetup:
            return EnvironmentSetup("daytona", {"startup_timeout": 600.0}, label="daytona (live)")
