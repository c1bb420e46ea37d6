"""A host that exits without closing its environments still stops their sandboxes and
removes their carriers' sockets and directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosts import Host, wait_gone

pytestmark = pytest.mark.timeout(120)

SCRIPT = """
import json, sys
from rlm_core.environments.base import Session
from rlm_core.environments.loopback import LoopbackEnvironment
from scripts import EchoHandler

env = LoopbackEnvironment(**json.loads(sys.argv[1]))
env.start(Session(subcalls=EchoHandler()))
print(env.execute("import os\\nprint(os.getpid())").stdout.strip(), flush=True)
# exits without env.close()
"""


def exits_leaving_nothing(script: str, *args: str) -> None:
    """Run the host ``script``, which prints its agent's pid and exits without closing:
    it exits with 0, and neither the agent nor anything in its TMPDIR is left."""
    with Host(script, *args) as host:
        agent = int(host.read_line())
        host.tracked.append(agent)
        status, _, err = host.finish()
        assert status == 0, err
        assert wait_gone([agent]) == []
        assert host.leftovers() == []


@pytest.mark.parametrize(
    "settings",
    ['{"carrier": "stdio"}', '{"carrier": "reverse", "tls": true}', '{"carrier": "dial"}'],
)
def test_an_unclosed_environment_is_closed_at_exit(settings: str) -> None:
    exits_leaving_nothing(SCRIPT, settings)


LAUNCHERS = """
import sys
from rlm_core.environments.launcher import Launcher, terminate_at_exit, terminated_before_exit

class Marking(Launcher):
    def __init__(self, name):
        self.name = name
    def launch(self, request):
        raise NotImplementedError
    def terminate(self):
        with open(sys.argv[1], "a") as f:
            f.write(self.name + "\\n")

left, done, broken = Marking("left"), Marking("done"), Marking("broken")
broken.terminate = lambda: 1 / 0
for launcher in (left, done, broken):
    terminate_at_exit(launcher)
done.terminate()
terminated_before_exit(done)
"""


def test_launchers_still_running_are_terminated_at_exit(tmp_path: Path) -> None:
    marks = tmp_path / "terminated.txt"
    with Host(LAUNCHERS, str(marks)) as host:
        status, _, err = host.finish()
    assert status == 0, err
    assert marks.read_text().split() == ["done", "left"]  # done by itself; left at exit
    assert "could not stop a sandbox at exit: division by zero" in err


SPARE_UNDER_WAY = """
import time
from rlm_core.environments import forkserver
from rlm_core.environments.base import Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from scripts import EchoHandler

fork = forkserver.ForkServer.spawn

def slow_fork(self, *args, **kwargs):
    time.sleep(1.0)  # the spare started after the first agent is still being forked at exit
    return fork(self, *args, **kwargs)

forkserver.ForkServer.spawn = slow_fork
env = SubprocessEnvironment()
env.start(Session(subcalls=EchoHandler()))
print(env.execute("import os\\nprint(os.getpid())").stdout.strip(), flush=True)
# exits without env.close(), the spare's fork under way
"""


def test_an_agent_being_started_at_exit_is_stopped_too() -> None:
    """The spare started in the background may still be forking when the host exits: the
    exit waits for it to exist, then stops it and removes its directory."""
    exits_leaving_nothing(SPARE_UNDER_WAY)
