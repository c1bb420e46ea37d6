"""Wrapper environments: the subprocess launcher under a command prefix (``unshare``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import ClassVar

import pytest
from hosts import Host, gone, wait_gone
from scripts import EchoHandler

from rlm_core.environments.base import Session
from rlm_core.environments.forkserver import ForkedProcess
from rlm_core.environments.subprocess import SubprocessEnvironment

pytestmark = pytest.mark.timeout(120)

UNSHARE = ("unshare", "--user", "--map-root-user", "--net", "--")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True).returncode == 0


if not _unshare_works():
    if os.environ.get("CI"):
        raise RuntimeError("unshare with user and network namespaces is needed in CI")
    pytest.skip("unshare cannot make user and network namespaces here", allow_module_level=True)


class NoNetworkEnvironment(SubprocessEnvironment):
    """Each agent in a network namespace of its own: no IP network (host Unix sockets stay
    reachable, so it does not claim ``network_off``)."""

    name = "no-network"
    command_prefix = UNSHARE


class SharedNamespaceEnvironment(NoNetworkEnvironment):
    """Agents forked from one fork server started under the prefix: one namespace."""

    share_fork_server: ClassVar[bool] = True


class MarkedEnvironment(SubprocessEnvironment):
    """A command hook: runs the agent through ``env`` with a variable of its own."""

    def agent_command(self, argv: list[str]) -> list[str]:
        return ["env", "WRAPPED_BY=hook", *argv]


@pytest.fixture
def started() -> Iterator[list[SubprocessEnvironment]]:
    envs: list[SubprocessEnvironment] = []
    yield envs
    for env in envs:
        env.close()


def _start(envs: list[SubprocessEnvironment], env: SubprocessEnvironment) -> SubprocessEnvironment:
    env.start(Session(subcalls=EchoHandler()))
    envs.append(env)
    return env


NAMESPACE = "import os, socket\nprint(os.readlink('/proc/self/ns/net'), socket.if_nameindex())"


def test_each_prefixed_agent_gets_a_namespace_of_its_own(
    started: list[SubprocessEnvironment],
) -> None:
    first = _start(started, NoNetworkEnvironment(cell_timeout=30))
    second = _start(started, NoNetworkEnvironment(cell_timeout=30))
    seen = [env.execute(NAMESPACE).stdout.split(" ", 1) for env in (first, second)]
    host_namespace = os.readlink("/proc/self/ns/net")
    assert seen[0][0] != seen[1][0] != host_namespace != seen[0][0]
    assert all(interfaces.strip() == "[(1, 'lo')]" for _, interfaces in seen)
    # Not forked from the fork server: started afresh under the wrapper.
    for env in (first, second):
        assert env.launcher is not None
        assert not isinstance(env.launcher.process, ForkedProcess)
    # The bridge still works from inside the namespace.
    assert first.execute("print(llm_query('hi'))").stdout == "llm:hi\n"


def test_a_shared_fork_server_puts_agents_in_its_namespace(
    started: list[SubprocessEnvironment],
) -> None:
    first = _start(started, SharedNamespaceEnvironment(cell_timeout=30))
    second = _start(started, SharedNamespaceEnvironment(cell_timeout=30))
    namespaces = {env.execute(NAMESPACE).stdout.split(" ", 1)[0] for env in (first, second)}
    assert len(namespaces) == 1 and os.readlink("/proc/self/ns/net") not in namespaces
    assert all(
        isinstance(env.launcher.process, ForkedProcess) for env in (first, second) if env.launcher
    )


def test_a_command_hook_wraps_the_agent(started: list[SubprocessEnvironment]) -> None:
    env = _start(started, MarkedEnvironment(cell_timeout=30))
    assert env.execute("import os; print(os.environ['WRAPPED_BY'])").stdout == "hook\n"


def test_closing_a_wrapped_environment_leaves_nothing(started: list[SubprocessEnvironment]) -> None:
    env = _start(started, NoNetworkEnvironment(cell_timeout=30))
    env.execute("import subprocess\np = subprocess.Popen(['sleep', '600'], start_new_session=True)")
    launcher = env.launcher
    assert launcher is not None and launcher.pid is not None
    from rlm_core.agent.process_tree import descendants

    tree = [launcher.pid, *descendants(launcher.pid)]
    assert len(tree) >= 3  # the supervisor (setpriv and unshare exec into it), agent, sleep
    directory = launcher.shared_dir()
    env.close()
    started.remove(env)
    assert wait_gone(tree) == []
    assert directory is not None and not os.path.exists(directory)


HOST = """
import os, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
from test_command_prefix import NoNetworkEnvironment
from rlm_core.agent.process_tree import descendants
from rlm_core.environments.base import Session
from scripts import EchoHandler

env = NoNetworkEnvironment(heartbeat_timeout=300, prewarm=False)
env.start(Session(subcalls=EchoHandler()))
pid = env.launcher.pid
print(" ".join(str(p) for p in [pid, *descendants(pid)]), flush=True)
__import__("time").sleep(600)
"""


def test_a_killed_host_takes_its_wrapped_agents_with_it() -> None:
    # The heartbeat timeout is long: the wrapper's parent-death signal does the work.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    with Host(HOST, env={"TESTS_DIR": tests_dir}) as host:
        pids = host.read_pids()
        assert all(not gone(pid) for pid in pids)
        os.kill(host.pid, signal.SIGKILL)
        assert wait_gone(pids, bound=60) == []
        assert host.leftovers() == []
