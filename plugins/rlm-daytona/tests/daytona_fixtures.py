"""Fixtures of the rlm-daytona tests: the fake Daytona service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from daytona_fake import FakeDaytona

MINUTE = 2.0
"""Seconds a minute of the fake's lifetimes lasts in these tests."""

QUICK = {"lease_interval": 0.5}
"""Settings for the fake's short minute: activity refreshed four times a (fake) minute."""


@contextlib.contextmanager
def serving(minute: float = MINUTE) -> Iterator[FakeDaytona]:
    """A started fake, with ``DAYTONA_*`` set in ``os.environ`` (host subprocesses inherit
    them) while it runs; every sandbox is destroyed and the variables restored afterwards."""
    fake = FakeDaytona(minute=minute).start()
    saved = {key: os.environ.get(key) for key in fake.environ()}
    os.environ.update(fake.environ())
    try:
        yield fake
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fake.stop()


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
