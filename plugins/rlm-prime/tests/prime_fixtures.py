"""Fixtures of the rlm-prime tests: the fake Prime service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from prime_fake import FakePrime

MINUTE = 1.0
"""Seconds a "minute" of the sandboxes' timeouts lasts on the tests' fakes."""


@contextlib.contextmanager
def serving(minute: float = MINUTE) -> Iterator[FakePrime]:
    """A started fake, with ``PRIME_*`` set in ``os.environ`` (host subprocesses inherit
    them) and ``HOME`` a private directory (the SDK keeps its gateway tokens in
    ``~/.prime``) while it runs; every sandbox is ended and the variables restored
    afterwards."""
    from rlm_prime import image

    fake = FakePrime(minute=minute).start()
    home = tempfile.mkdtemp(prefix="rlm-prime-home-")
    variables = {**fake.environ(), "HOME": home, "PRIME_TEAM_ID": ""}
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    image._known.clear()  # images are per account: this fake has none built yet
    try:
        yield fake
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        image._known.clear()
        fake.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fake_prime() -> Iterator[FakePrime]:
    """A fake Prime of this test's own."""
    with serving() as fake:
        yield fake


@pytest.fixture(scope="class")
def shared_fake_prime() -> Iterator[FakePrime]:
    """A fake Prime shared by one test class (the conformance suite's)."""
    with serving() as fake:
        yield fake
