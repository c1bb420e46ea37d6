"""Fixtures of the rlm-daytona tests: the fake Daytona service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from daytona_fake import FakeDaytona
from rlm_conformance import fake_service

MINUTE = 2.0
"""Seconds a minute of the fake's lifetimes lasts in these tests."""

QUICK = {"lease_interval": 0.5}
"""Settings for the fake's short minute: activity refreshed four times a (fake) minute."""


@contextlib.contextmanager
def serving(minute: float = MINUTE) -> Iterator[FakeDaytona]:
    """A started fake, with ``DAYTONA_*`` set in ``os.environ`` (host subprocesses inherit
    them) while it runs; every sandbox is destroyed and the variables restored afterwards."""
    with fake_service.serving(FakeDaytona(minute=minute)) as fake:
        yield fake


@pytest.fixture
def fake_daytona() -> Iterator[FakeDaytona]:
    """A fake Daytona of this test's own."""
    with serving() as fake:
        yield fake


@pytest.fixture(scope="class")
def shared_fake_daytona() -> Iterator[FakeDaytona]:
    """A fake Daytona shared by one test class (the conformance suite's)."""
    with serving() as fake:
        yield fake
