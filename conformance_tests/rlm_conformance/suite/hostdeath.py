"""HST: a host killed mid-cell leaves nothing running."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from rlm_conformance.cases import case
from rlm_conformance.probes import (
    Identity,
    describe,
    host_identity,
    host_tmpdir,
    kill,
    running,
    wait_gone,
)
from rlm_conformance.setup import EnvironmentSetup
from rlm_core.environments.base import SEPARATE_PROCESS

HOST = r"""
import json, sys
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.setup import EnvironmentSetup, resolve_reference
from rlm_core.environments.base import Session

reference, settings, marker = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
env = EnvironmentSetup(resolve_reference(reference), settings).build()
env.start(Session(subcalls=RecordingSubcalls()))
code = '''
import json, os, subprocess, sys
def ident(pid):
    with open(f"/proc/{pid}/stat") as f:
        return [pid, int(f.read().rsplit(")", 1)[1].split()[19])]
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARKER])
print(json.dumps([ident(os.getpid()), ident(kid.pid)]))
'''.replace("MARKER", repr(marker))
result = env.execute(code)
launcher = getattr(env, "active_launcher", None)
sandbox = None if launcher is None else launcher.sandbox_id
if result.error:
    print(result.error, flush=True)
else:
    print(json.dumps({"processes": json.loads(result.stdout), "sandbox": sandbox}), flush=True)
env.execute("while True:\n    pass")
"""

BOUND = 90.0
"""Seconds the sandbox may take to notice its host is gone (its heartbeat timeout)."""


def read_line(process: subprocess.Popen[str], bound: float) -> str:
    """The host's first stdout line (fails the test if none comes within ``bound``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if line:
                return line
            process.wait(30)  # the output ended: the host program exited
            break
        if process.poll() is not None:
            break
    stderr = process.stderr.read() if process.stderr and process.poll() is not None else ""
    pytest.fail(f"the host program printed nothing (exit status {process.poll()}):\n{stderr}")


def listing(setup: EnvironmentSetup, sandbox: str | None) -> Callable[[float], bool] | None:
    """A wait for ``sandbox`` to leave its provider's listing (``None`` when the provider
    cannot list, or the sandbox has no id): how a remote sandbox's end is seen."""
    launcher = getattr(setup.environment_class, "launcher_class", None)
    if sandbox is None or launcher is None:
        return None
    if sandbox not in (launcher.list_sandboxes() or []):
        return None  # not listed here: no listing, or one this process does not share

    def gone(bound: float) -> bool:
        deadline = time.monotonic() + bound
        while sandbox in (launcher.list_sandboxes() or []):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    return gone


class HostDeathTests:
    """What happens to a sandbox whose host is SIGKILLed in the middle of a cell."""

    @case(
        "HST-001",
        "a host SIGKILLed mid-cell leaves no sandbox process running, nor a listed sandbox",
        requires=[SEPARATE_PROCESS],
    )
    def test_host_killed(self, environment_setup: EnvironmentSetup) -> None:
        settings = dict(environment_setup.kwargs)
        declared = environment_setup.environment_class.settings()
        if "heartbeat_timeout" in declared:
            settings.setdefault("heartbeat_timeout", 5.0)
            settings.setdefault("heartbeat_interval", 0.5)
        marker = "rlm-conformance-orphan-" + secrets.token_hex(6)
        tmp = host_tmpdir()  # removed below, with what the killed host left there
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env["TMPDIR"] = tmp
        host = subprocess.Popen(
            [
                sys.executable, "-c", HOST,
                environment_setup.reference(), json.dumps(settings), marker,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        watched: list[Identity] = []
        try:
            line = read_line(host, 120)
            try:
                said = json.loads(line)
                watched = [host_identity((p, s)) for p, s in said["processes"]]
            except (ValueError, TypeError, KeyError):
                pytest.fail(f"the host program's cell failed: {line}")
            visible = all(running(p) for p in watched)
            lister = listing(environment_setup, said.get("sandbox"))
            if not visible and lister is None:
                pytest.skip(
                    "the sandbox's processes are not visible from this machine, nor the "
                    "sandbox in a provider listing this process can read"
                )
            time.sleep(0.5)  # the endless cell is running now
            os.kill(host.pid, signal.SIGKILL)
            host.wait(30)
            if visible:
                left = wait_gone(watched, BOUND)
                shown = [describe(p) for p in left]
                assert not left, f"{BOUND:g}s after its host was killed, still running: {shown}"
            if lister is not None:
                sandbox = said["sandbox"]
                assert lister(BOUND), (
                    f"{BOUND:g}s after its host was killed, sandbox {sandbox} is still listed"
                )
        finally:
            with contextlib.suppress(OSError):
                os.killpg(host.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.wait(30)
            kill(watched)
            shutil.rmtree(tmp, ignore_errors=True)
