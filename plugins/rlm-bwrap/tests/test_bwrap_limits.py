"""The resource-limit settings bite: processes, open files, CPU time, disk, memory."""

from __future__ import annotations

import json
import os

import pytest
from bwrap_support import envs, require_bwrap, start  # noqa: F401
from rlm_bwrap import BwrapEnvironment

from rlm_core.exceptions import RLMWarning, SandboxError

require_bwrap()

pytestmark = pytest.mark.timeout(120)

SPAWN = """
import json, subprocess, sys
kids, refused = [], None
try:
    for _ in range(200):
        kids.append(subprocess.Popen([sys.executable, '-S', '-c', 'import time; time.sleep(60)']))
except OSError as e:
    refused = type(e).__name__
for kid in kids:
    kid.kill()
    kid.wait()
print(json.dumps([len(kids), refused]))
"""

OPEN_FILES = """
import json
handles, refused = [], None
try:
    for _ in range(500):
        handles.append(open('/dev/null'))
except OSError as e:
    refused = e.strerror
for handle in handles:
    handle.close()
print(json.dumps([len(handles), refused]))
"""

SPIN_CHILD = """
import subprocess, sys
done = subprocess.run([sys.executable, '-S', '-c', 'while True: pass'], timeout=60)
print(done.returncode)
"""


def _last_json(env: BwrapEnvironment, code: str) -> object:
    result = env.execute(code)
    assert result.error is None, result.error
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_cell_over_the_process_limit_is_refused(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    if os.geteuid() == 0:  # the kernel exempts the host's root user from RLIMIT_NPROC
        with pytest.warns(RLMWarning, match="max_processes"):
            env = start(max_processes=64)
        envs.append(env)
        limit = "import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC))"
        assert env.execute(limit).stdout == "(64, 64)\n"
        return
    env = start(max_processes=64)
    envs.append(env)
    started, refused = _last_json(env, SPAWN)  # type: ignore[misc]
    assert refused == "BlockingIOError" and started < 64, (started, refused)
    assert env.execute("print('fine')").stdout == "fine\n"


def test_a_cell_over_the_open_file_limit_is_refused(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    env = start(max_open_files=100)
    envs.append(env)
    opened, refused = _last_json(env, OPEN_FILES)  # type: ignore[misc]
    assert refused == "Too many open files" and opened < 100, (opened, refused)
    assert env.execute("print('fine')").stdout == "fine\n"


def test_a_process_over_its_cpu_time_is_killed(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    env = start(cpu_time_limit=1)
    envs.append(env)
    assert env.execute(SPIN_CHILD).stdout == "-9\n"  # SIGKILL at the hard limit
    with pytest.raises(SandboxError):  # the agent's own process: the sandbox ends, typed
        env.execute("while True:\n    pass")


def test_the_disk_limit_bounds_tmp_and_dev_shm(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    env = start(disk_limit_mb=4)
    envs.append(env)
    code = (
        "import json\nout = {}\nfor d in ('/tmp', '/dev/shm'):\n    n = 0\n    try:\n"
        "        with open(d + '/fill', 'wb') as f:\n            for _ in range(16):\n"
        "                f.write(b'x' * (1 << 20)); f.flush(); n += 1\n"
        "    except OSError as e:\n        out[d] = [n, e.strerror]\n"
        "print(json.dumps(out))"
    )
    filled = _last_json(env, code)
    assert isinstance(filled, dict) and set(filled) == {"/tmp", "/dev/shm"}, filled
    for written, why in filled.values():
        assert written <= 4 and why == "No space left on device", filled
