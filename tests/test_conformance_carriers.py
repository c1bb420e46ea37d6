"""Whole completions, the answer protocol and the bridge's security over every carrier
of the built-in ``loopback`` environment (the agent as a local process, reached as a cloud
plugin reaches it). The whole suite runs on ``local``, ``subprocess`` and ``loopback``
over stdio with base64 framing and TLS in ``make test`` (``rlm conformance``)."""

from __future__ import annotations

from typing import Any

import pytest
from rlm_conformance import EnvironmentSetup
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import AnswerTests, BridgeSecurityTests, CompletionTests

pytestmark = pytest.mark.timeout(300)

CARRIERS: dict[str, dict[str, Any]] = {
    "dial": {"carrier": "dial"},
    "dial-tls": {"carrier": "dial", "tls": True},
    "stdio": {"carrier": "stdio"},
    "stdio-base64": {"carrier": "stdio", "framing": "base64"},
    "reverse": {"carrier": "reverse"},
    "reverse-tls": {"carrier": "reverse", "tls": True},
}


class TestLoopbackCarriers(CompletionTests, AnswerTests, BridgeSecurityTests, EnvironmentFixtures):
    """RUN, ANS and SEC on each carrier."""

    @pytest.fixture(params=list(CARRIERS), ids=list(CARRIERS))
    def environment_setup(self, request: pytest.FixtureRequest) -> EnvironmentSetup:
        return EnvironmentSetup("loopback", CARRIERS[request.param], f"loopback {request.param}")
