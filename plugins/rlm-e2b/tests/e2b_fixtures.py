"""Fixtures of the rlm-e2b tests: the fake E2B service, with the SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from e2b_fake import FakeE2B
from rlm_conformance import fake_service


@contextlib.contextmanager
def serving() -> Iterator[FakeE2B]:
    """A started fake, with ``E2B_*`` set in ``os.environ`` (host subprocesses inherit
    them) while it runs; every sandbox is killed and the variables restored afterwards."""
    from rlm_e2b import template

    # Templates are per account: this fake has none built yet.
    with fake_service.serving(FakeE2B(), reset=template._known.clear) as fake:
        yield fake


@pytest.fixture
def fake_e2b() -> Iterator[FakeE2B]:
    """A fake E2B of this test's own."""
    with serving() as fake:
        yield fake


@pytest.fixture(scope="class")
def shared_fake_e2b() -> Iterator[FakeE2B]:
    """A fake E2B shared by one test class (the conformance suite's)."""
    with serving() as fake:
        yield fake
