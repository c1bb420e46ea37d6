"""What the bwrap tests share: whether bubblewrap works here, started environments, and
the host's view of a sandbox's processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from rlm_bwrap import BwrapEnvironment
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import Identity, identity, running

from rlm_core.environments.base import Session

PROBE = ["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"]


def bwrap_works() -> bool:
    """Whether ``bwrap`` is installed and can make user namespaces here."""
    if shutil.which("bwrap") is None:
        return False
    return subprocess.run(PROBE, capture_output=True).returncode == 0


def require_bwrap() -> None:
    """Skip the calling module without a working bubblewrap (fail it under ``CI=true``)."""
    if bwrap_works():
        return
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("bubblewrap with unprivileged user namespaces is needed in CI")
    pytest.skip("bubblewrap cannot make a sandbox here", allow_module_level=True)


def start(**settings: object) -> BwrapEnvironment:
    """A started ``bwrap`` environment with ``settings``."""
    env = BwrapEnvironment(**settings)  # type: ignore[arg-type]
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


def tree(pid: int) -> list[Identity]:
    """``pid`` and every process below it, as the host sees them."""
    found: list[Identity] = []
    queue = [pid]
    while queue:
        current = queue.pop()
        ident = identity(current)
        if ident is None:
            continue
        found.append(ident)
        for task in os.listdir(f"/proc/{current}/task"):
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    queue.extend(int(child) for child in f.read().split())
            except OSError:
                continue
    return found


def gone_within(processes: list[Identity], bound: float = 15.0) -> list[Identity]:
    """The processes still running after up to ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        left = [p for p in processes if running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def envs() -> Iterator[list[BwrapEnvironment]]:
    """Environments a test started, closed at its end."""
    started: list[BwrapEnvironment] = []
    yield started
    for env in started:
        env.close()
