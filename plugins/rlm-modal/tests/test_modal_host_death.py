"""A host killed with SIGKILL in the middle of a cell leaves nothing running: the agent's
heartbeat watchdog ends the agent, and Modal's idle timeout then ends the sandbox."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from modal_fake import ModalFake
from modal_fixtures import modal_fake  # noqa: F401
from rlm_conformance.probes import host_script

pytestmark = pytest.mark.timeout(180)

HOST = """
import json, sys
from rlm_conformance.doubles import RecordingSubcalls
from rlm_core.environments.base import Session
from rlm_modal import ModalEnvironment

env = ModalEnvironment(heartbeat_timeout=3, heartbeat_interval=0.5, idle_timeout=2)
env.start(Session(subcalls=RecordingSubcalls()))
result = env.execute("import subprocess, sys; kid = subprocess.Popen(['sleep', '600'])")
print(json.dumps([env.active_launcher.sandbox_id, result.error]), flush=True)
env.execute("while True:\\n    pass")
"""

BOUND = 60.0
"""Seconds for heartbeat_timeout (3) plus idle_timeout (2), with a wide margin."""


def test_host_killed_mid_cell(modal_fake: ModalFake) -> None:  # noqa: F811
    with host_script(HOST) as host:
        assert host.stdout is not None
        ready, _, _ = select.select([host.stdout], [], [], 120)
        assert ready, "the host printed nothing"
        line = host.stdout.readline()
        assert line, f"the host failed: {host.stderr.read() if host.stderr else ''}"
        sandbox_id, error = json.loads(line)
        assert error is None
        assert sandbox_id in modal_fake.live()
        time.sleep(0.5)  # the endless cell runs
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(30)
        assert modal_fake.wait_gone([sandbox_id], BOUND) == [], "the orphan was not reaped"
        record = modal_fake.record(sandbox_id)
        assert record.result is not None and "idle" in record.result.exception
        for process in modal_fake.processes(sandbox_id):
            assert process.poll() is not None, f"pid {process.pid} is still running"


EXITS = """
import json
from rlm_conformance.doubles import RecordingSubcalls
from rlm_core.environments.base import Session
from rlm_modal import ModalEnvironment

env = ModalEnvironment(idle_timeout=600, max_lifetime=3600)
env.start(Session(subcalls=RecordingSubcalls()))
print(json.dumps(env.active_launcher.sandbox_id), flush=True)
"""


def test_host_exit_without_close_terminates(modal_fake: ModalFake) -> None:  # noqa: F811
    """A host that exits without closing its environment terminates the sandbox itself
    (not left to the idle timeout or the lifetime)."""
    done = subprocess.run(
        [sys.executable, "-c", EXITS],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    sandbox_id = json.loads(done.stdout)
    record = modal_fake.record(sandbox_id)
    assert record.result is not None, "the sandbox outlived its host"
    assert record.result.exception == "terminated"
