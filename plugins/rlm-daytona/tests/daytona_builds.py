"""The image builds of the Daytona fake: a Dockerfile built once into a snapshot, then reused.

A sandbox created from an image (``buildInfo``) whose Dockerfile and context were built
before starts at once; otherwise it waits for a :class:`Build`, which goes ``queued`` (the
sandbox is ``pending_build``), ``building`` (``building_snapshot``), then ``built`` (the
sandbox goes ``starting``, then ``started``) or ``failed`` (``build_failed``). The build's
log is one line per Dockerfile step, the steps spread over the build's time as a long
``RUN`` would, then the result: ``Successfully built ...`` or ``ERROR: <reason>``.

Builds are driven by the fake's clock (:meth:`Build.advance`, called by its reaper), not by
threads of their own, so a stopped fake leaves none running.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SANDBOX_STATES = {
    "queued": "pending_build",
    "building": "building_snapshot",
    "built": "starting",
    "failed": "build_failed",
}
"""The state of a sandbox waiting for a build, by the build's state."""


def build_key(build_info: dict[str, Any]) -> str:
    """What Daytona caches a build by: the hash of the Dockerfile and of its context."""
    hashes = sorted(str(h) for h in build_info.get("contextHashes") or [])
    text = "\n".join([str(build_info.get("dockerfileContent") or ""), *hashes])
    return hashlib.sha256(text.encode()).hexdigest()


def dockerfile_steps(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions (continued lines joined, comments left out)."""
    steps: list[str] = []
    pending = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        steps.append(pending + stripped)
        pending = ""
    if pending:
        steps.append(pending.rstrip())
    return steps


@dataclass
class Build:
    """One build of a Dockerfile: its state, its log so far, when it ends.

    ``seconds``: how long the building lasts; ``failure``: the reason it fails, or
    ``None`` (it succeeds).
    """

    key: str
    build_info: dict[str, Any]
    seconds: float
    failure: str | None = None
    state: str = "queued"
    log: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def snapshot_ref(self) -> str:
        """The name of the snapshot the build makes."""
        return f"daytona-{self.key[:40]}:daytona"

    @property
    def done(self) -> bool:
        """Whether the build has ended (``built`` or ``failed``)."""
        return self.state in ("built", "failed")

    def _script(self) -> tuple[list[str], list[str]]:
        """The step lines, and the lines written when the build ends."""
        steps = dockerfile_steps(str(self.build_info.get("dockerfileContent") or ""))
        lines = [f"Step {i}/{len(steps)} : {step}" for i, step in enumerate(steps, 1)]
        if self.failure is not None:
            return lines, [f"ERROR: {self.failure}"]
        return lines, [
            f"Successfully built {self.key[:12]}",
            f"Successfully tagged {self.snapshot_ref}",
        ]

    def advance(self, now: float) -> None:
        """Move the build on to ``now``: from ``queued`` it starts building at once (the
        first tick of the clock after the create call); step ``i`` of ``n`` is logged
        ``(i - 1) * seconds / n`` after that, and the build ends ``seconds`` after it."""
        with self.changed:
            if self.done:
                return
            before = (self.state, len(self.log))
            if self.state == "queued":
                self.state, self.began = "building", now
            steps, ending = self._script()
            elapsed = now - self.began
            if elapsed >= self.seconds:
                self.log.extend([*steps, *ending][len(self.log) :])
                self.state = "failed" if self.failure is not None else "built"
            else:
                due = min(len(steps), int(elapsed * len(steps) / self.seconds) + 1)
                self.log.extend(steps[len(self.log) : due])
            if (self.state, len(self.log)) != before:
                self.changed.notify_all()

    def follow(self, alive: Callable[[], bool], wait: float = 0.2) -> Iterator[str]:
        """The build's log lines, those written so far and then as they come, until the
        build has ended or ``alive()`` is false."""
        sent = 0
        while True:
            with self.changed:
                self.changed.wait_for(
                    lambda sent=sent: len(self.log) > sent or self.done, timeout=wait
                )
                lines, done = self.log[sent:], self.done
            sent += len(lines)
            yield from lines
            if (done and not lines) or not alive():
                return

    def info(self) -> dict[str, Any]:
        """The sandbox's ``buildInfo`` as the service reports it."""
        return {
            "dockerfileContent": self.build_info.get("dockerfileContent"),
            "contextHashes": self.build_info.get("contextHashes") or [],
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "snapshotRef": self.snapshot_ref,
        }
