"""A host killed with SIGKILL leaves no sandbox process running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bwrap_support import gone_within, require_bwrap
from rlm_conformance.probes import describe, host_tmpdir, kill

require_bwrap()

pytestmark = pytest.mark.timeout(120)

HOST = """
import json, sys, time
sys.path.insert(0, {tests!r})
from bwrap_support import start, tree
env = start()
env.execute("import subprocess, sys\\nsubprocess.Popen([sys.executable, '-S', '-c', "
            "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(600)'])")
print(json.dumps(tree(env.launcher.pid)), flush=True)
time.sleep(600)
"""


def test_a_killed_host_leaves_no_sandbox_process() -> None:
    code = HOST.format(tests=str(Path(__file__).parent))
    tmp = host_tmpdir()  # removed below, with what the killed host left there
    host = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": tmp},
        start_new_session=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line, host.stderr.read() if host.stderr else ""
        processes = [(pid, start) for pid, start in json.loads(line)]
        assert len(processes) >= 5  # bubblewrap, its init, supervisor, agent, the cell's child
    finally:
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(timeout=10)
    try:
        left = gone_within(processes)
        shown = [describe(p) for p in left]
        kill(left)
        assert not left, f"still running after the host was killed: {shown}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
