"""Nothing outlives ``close()``: the sandbox's processes (detached ones included), its
socket directory; and each environment gets a sandbox of its own."""

from __future__ import annotations

import os

import pytest
from bwrap_support import envs, gone_within, require_bwrap, start, tree  # noqa: F401
from rlm_bwrap import BwrapEnvironment
from rlm_conformance.probes import describe, kill

require_bwrap()

pytestmark = pytest.mark.timeout(120)

DETACH = """
import os, subprocess, sys
if os.fork() == 0:
    os.setsid()
    subprocess.Popen([sys.executable, '-S', '-c',
        'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])
    os._exit(0)
os.wait()
import time
time.sleep(0.3)
print('detached')
"""


@pytest.mark.parametrize("prewarm", [False, True])
def test_nothing_is_left_after_close(prewarm: bool) -> None:
    env = start(prewarm=prewarm)
    try:
        assert env.execute(DETACH).stdout == "detached\n"
        launcher = env.launcher
        assert launcher is not None and launcher.pid is not None
        directory = launcher.shared_dir()
        assert directory is not None and os.path.isdir(directory)
        processes = tree(launcher.pid)
        assert len(processes) >= 4  # bubblewrap, its init, the agent's supervisor, the agent
    finally:
        env.close()
    left = gone_within(processes)
    shown = [describe(p) for p in left]
    kill(left)
    assert not left, f"still running after close(): {shown}"
    assert not os.path.exists(directory)


def test_each_environment_has_a_sandbox_of_its_own(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    probe = (
        "import os\nopen('/tmp/mine', 'a').close()\n"
        "print(os.readlink('/proc/self/ns/net'), os.readlink('/proc/self/ns/mnt'), "
        "sorted(os.listdir('/tmp')))"
    )
    first, second = start(), start()
    envs.extend([first, second])
    seen = [env.execute(probe).stdout.split(" ", 2) for env in (first, second)]
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1], seen
    for *_, files in seen:
        assert files.count("mine") == 1


def test_the_sandbox_sees_the_runtime_only(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    env = start(env={"GREETING": "hello"})
    envs.append(env)
    code = (
        "import json, os, sys\nprint(json.dumps([os.getuid(), sorted(os.listdir('/etc')), "
        "os.path.exists('/home'), os.path.exists('/var'), dict(os.environ), os.getcwd()]))"
    )
    uid, etc, home, var, environ, cwd = __import__("json").loads(env.execute(code).stdout)
    assert uid == 1000 and cwd == "/tmp"
    assert etc in ([], ["ld.so.cache"]) and not home and not var
    assert environ["GREETING"] == "hello" and environ["HOME"] == "/tmp"
    expected = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONPATH", "GREETING", "LC_CTYPE", "PWD"}
    assert set(environ) <= expected, environ
