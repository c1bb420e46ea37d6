"""A lease renews a sandbox's lifetime while the host lives, survives failed renewals,
and stops renewing when stopped."""

from __future__ import annotations

import threading
import time

import pytest

from rlm_core.environments.lease import Lease

pytestmark = pytest.mark.timeout(60)


def test_renews_until_stopped_and_survives_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    third = threading.Event()

    def renew() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise ConnectionError("the provider's API is down")
        if len(calls) >= 3:
            third.set()

    lease = Lease(renew, every=0.02, name="sandbox-1").start()
    assert third.wait(20), "the lease stopped renewing after a failed renewal"
    lease.stop()
    settled = len(calls)
    time.sleep(0.2)
    assert len(calls) == settled, "renewals went on after stop()"
    assert lease.failures == 1 and lease.renewals == settled - 1
    assert "could not extend the lifetime of sandbox-1: the provider's API is down" in caplog.text
    lease.stop()  # twice is fine


def test_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        Lease(lambda: None, every=0)
