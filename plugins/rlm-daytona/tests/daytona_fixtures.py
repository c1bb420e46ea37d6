"""Fixtures of the rlm-daytona tests: the fake Daytona service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from daytona_fake import FakeDaytona
from rlm_conformance import fake_service
from rlm_conformance.doubles import RecordingSubcalls
from rlm_daytona.environment import DaytonaEnvironment

from rlm_core.environments.base import Session

MINUTE = 8.0
"""Seconds a minute of the fake's lifetimes lasts in these tests: a sandbox whose host
stops refreshing its activity is stopped (and so deleted) within 8 s, yet a host starved of
the CPU by the rest of the suite for a few seconds keeps its sandbox."""

QUICK = {"lease_interval": 2.0}
"""Settings for the fake's short minute: activity refreshed four times a (fake) minute."""


def started(**settings: object) -> DaytonaEnvironment:
    """A started ``daytona`` environment with :data:`QUICK` and ``settings``."""
    env = DaytonaEnvironment(**{**QUICK, **settings})  # type: ignore[arg-type]
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


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
