"""The conformance suite on real Modal: runs only with Modal credentials in the environment
(``MODAL_TOKEN_ID`` and ``MODAL_TOKEN_SECRET``); skipped, saying so, otherwise."""

from __future__ import annotations

import os

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests

pytestmark = pytest.mark.live


def live_reason() -> str | None:
    """Why the live tests cannot run here (``None`` when they can)."""
    if not (os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET")):
        return "live Modal tests need MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
    server = os.environ.get("MODAL_SERVER_URL", "")
    if "127.0.0.1" in server or "localhost" in server:
        return f"MODAL_SERVER_URL points at a local server ({server}), not at Modal"
    return None


class TestModalLive(EnvironmentTests):
    """Every standard test on a real Modal sandbox (each one a billed sandbox: minutes)."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        reason = live_reason()
        if reason is not None:
            pytest.skip(reason)
        return EnvironmentSetup("modal", {"startup_timeout": 600}, label="modal (live)")
