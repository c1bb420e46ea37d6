"""A renewable server-side lifetime: the sandbox lives a short time unless the host, while
it lives, keeps extending it.

A provider whose sandboxes have an absolute timeout that can be extended (E2B's
``set_timeout``, Daytona's ``refresh_activity``) gets orphan protection from it: create the
sandbox with a short timeout and renew it from a :class:`Lease`. When the host process
dies, the renewals stop and the provider reaps the sandbox within one lease, whatever
happened to the agent's own heartbeat watchdog.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Lease:
    """Calls ``renew()`` every ``every`` seconds on a daemon thread until :meth:`stop`.

    A failed renewal is logged and retried at the next tick (the provider keeps the
    sandbox until the lease it last granted runs out). ``renew`` should extend the
    sandbox's lifetime to at least twice ``every`` from now, so one missed tick is
    survived.
    """

    def __init__(self, renew: Callable[[], None], every: float, name: str = "sandbox") -> None:
        if not every > 0:
            raise ValueError(f"a lease is renewed every positive number of seconds, not {every!r}")
        self._renew = renew
        self._every = every
        self._name = name
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        """How many renewals succeeded."""
        self.failures = 0
        """How many renewals raised."""

    def start(self) -> Lease:
        """Start renewing (the first renewal comes after ``every`` seconds)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"rlm-lease-{self._name}", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            try:
                self._renew()
            except Exception as exc:
                self.failures += 1
                log.warning("could not extend the lifetime of %s: %s", self._name, exc)
            else:
                self.renewals += 1

    def stop(self) -> None:
        """Stop renewing (the sandbox then ends when its last lease runs out, unless it is
        terminated first). Safe to call twice; waits for a renewal in progress."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
