"""Fixtures of the rlm-modal tests: the fake Modal service and the SDK pointed at it."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator

import pytest
from modal_fake import ModalFake
from rlm_conformance.fake_service import environment

LEAK_BOUND = 30.0
"""Seconds a test's sandboxes may take to end after it (an orphan's idle timeout)."""

_service: ModalFake | None = None
_service_lock = threading.Lock()


def fake_service() -> ModalFake:
    """The process's one fake Modal service (started on first use, stopped at exit). One
    service keeps one URL, so the SDK's per-process client stays valid across tests."""
    global _service
    with _service_lock:
        if _service is None:
            _service = ModalFake().start()
            atexit.register(_service.stop)
        return _service


@pytest.fixture
def modal_fake() -> Iterator[ModalFake]:
    """The fake service, with ``MODAL_SERVER_URL`` and the token variables pointing at it
    for the test's duration (inherited by host subprocesses). After the test, every
    sandbox it created must end (within :data:`LEAK_BOUND`) and leave no files behind; the
    test fails otherwise."""
    fake = fake_service()
    with environment(fake.environ()):
        before = set(fake.sandboxes)
        yield fake
        unimplemented = list(fake.unimplemented)
        fake.reset()
        assert not unimplemented, f"the SDK called RPCs the fake lacks: {unimplemented}"
        created = set(fake.sandboxes) - before
        left = fake.wait_gone(created, LEAK_BOUND)
        for sandbox_id in left:
            fake.kill(sandbox_id)
        assert not left, f"sandboxes still running {LEAK_BOUND:g}s after the test: {left}"
        kept = [i for i in sorted(created) if fake.record(i).box.root.exists()]
        assert not kept, f"ended sandboxes whose files were left on this machine: {kept}"
