"""Fixtures of the rlm-prime tests: the fake Prime service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import pytest
from prime_fake import FakePrime
from rlm_conformance import fake_service

MINUTE = 1.0
"""Seconds a "minute" of the sandboxes' timeouts lasts on the tests' fakes."""


@contextlib.contextmanager
def serving(minute: float = MINUTE) -> Iterator[FakePrime]:
    """A started fake, with ``PRIME_*`` set in ``os.environ`` (host subprocesses inherit
    them) and ``HOME`` a private directory (the SDK keeps its gateway tokens in
    ``~/.prime``) while it runs; every sandbox is ended and the variables restored
    afterwards."""
    from rlm_prime import image

    with tempfile.TemporaryDirectory(prefix="rlm-prime-home-", ignore_cleanup_errors=True) as home:
        variables = {"HOME": home, "PRIME_TEAM_ID": ""}
        # Images are per account: this fake has none built yet.
        with fake_service.serving(FakePrime(minute=minute), variables, image._known.clear) as fake:
            yield fake


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
