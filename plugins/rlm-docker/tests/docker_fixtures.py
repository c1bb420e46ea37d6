"""Fixtures of the rlm-docker tests: a podman engine, the test image, a leak check.

Without an engine that can run here (no podman, not root) the tests skip, saying why;
under ``CI=true`` they fail instead (``make podman`` installs it there).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from docker_engine import Engine, build_image, start_engine, unavailable

LEAK_BOUND = 30.0
"""Seconds a test's containers may take to be gone after it."""

PROCESS_TAG = f"rlm-docker-tests-{os.getpid()}"
"""The ``tag`` setting of the containers this test process starts (and the hosts it
starts), so its leak check counts only its own when several test processes share the
engine's storage (pytest-xdist)."""


@dataclass(frozen=True)
class EngineUnderTest:
    """The running engine and the image the tests run."""

    engine: Engine
    image: str

    def settings(self, **more: object) -> dict[str, object]:
        """Environment settings that run the test image (never pulled), tagged with
        :data:`PROCESS_TAG` unless ``more`` gives a tag."""
        return {"image": self.image, "pull": "never", "tag": PROCESS_TAG, **more}


_engine: EngineUnderTest | None = None
_engine_error: str | None = None
_lock = threading.Lock()


def _prepare() -> EngineUnderTest:
    """Start the engine and build the image once per process (stopped at exit)."""
    global _engine, _engine_error
    with _lock:
        if _engine is None and _engine_error is None:
            reason = unavailable()
            if reason is not None:
                _engine_error = reason
            else:
                engine = start_engine()
                atexit.register(engine.stop)
                _engine = EngineUnderTest(engine, build_image(engine.environ))
        if _engine is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true, but the rlm-docker tests cannot run: {_engine_error}")
            pytest.skip(str(_engine_error))
        return _engine


def containers(label: str = "rlm-core") -> list[str]:
    """The names of the engine's containers carrying ``label`` (as podman lists them)."""
    listed = subprocess.run(
        ["podman", "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(line for line in listed.stdout.split() if line)


@pytest.fixture
def docker_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineUnderTest]:
    """The engine (``DOCKER_HOST`` and ``CONTAINERS_CONF`` set for the test and the host
    processes it starts). After the test, every container it started with
    :meth:`EngineUnderTest.settings` must be gone within :data:`LEAK_BOUND`; the test fails
    otherwise (and the containers are removed)."""
    prepared = _prepare()
    for name, value in prepared.engine.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RLM_DOCKER_ENGINE", raising=False)
    ours = f"rlm-tag={PROCESS_TAG}"
    before = set(containers(ours))
    yield prepared
    deadline = time.monotonic() + LEAK_BOUND
    left = sorted(set(containers(ours)) - before)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = sorted(set(containers(ours)) - before)
    if left:
        subprocess.run(["podman", "rm", "--force", *left], capture_output=True)
    assert not left, f"containers still there {LEAK_BOUND:g}s after the test: {left}"
