"""The ``subprocess`` environment's failure paths, with real agent processes.

Timeouts that keep state, agents restarted after ignoring an interrupt, agents that die,
the memory limit, nothing left running after close or after the host dies, contexts of
any size, variables and custom tools over the bridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import hosts
import pytest
from hosts import Host, gone
from scripts import EchoHandler, Script, finish, repl

from rlm_core import RLM
from rlm_core.environments.base import Session, parse_tools
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.exceptions import SandboxCrashedError, SandboxError, SandboxRestartedError

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and signals"),
]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
IGNORES_INTERRUPTS = (
    "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except BaseException:\n"
    "        pass"
)

Messages = list[dict[str, Any]]


def start(session: Session | None = None, **kwargs: Any) -> SubprocessEnvironment:
    env = SubprocessEnvironment(**kwargs)
    env.start(session or Session(subcalls=EchoHandler()))
    return env


@pytest.fixture
def env() -> Iterator[SubprocessEnvironment]:
    e = start(interrupt_grace=1)
    e.add_context("the context")
    yield e
    e.close()


def pid_of(env: SubprocessEnvironment) -> int:
    pid = env.agent_pid
    assert pid is not None
    return pid


def launched(env: SubprocessEnvironment) -> int:
    """The process the launcher started: the agent's supervisor (the agent is its child)."""
    assert env.launcher is not None and env.launcher.pid is not None
    return env.launcher.pid


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def is_fork_server(pid: int) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"--fork-server" in f.read().split(b"\0")


def wait_gone(pid: int, bound: float = 30.0) -> bool:
    return hosts.wait_gone([pid], bound) == []


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def since_last_reply(messages: Messages) -> str:
    """What the root LM was shown after its last reply (the REPL output and next prompt)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return "\n".join(str(m["content"]) for m in messages[last + 1 :])


def make_rlm(script: Any, **kwargs: Any) -> RLM:
    return RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        environment="subprocess",
        **kwargs,
    )


# -- 1. a timeout interrupts the cell and keeps the session -----------------------------


def test_timeout_interrupts_a_sleeping_cell_and_keeps_state(env: SubprocessEnvironment) -> None:
    pid = pid_of(env)
    assert env.execute("x = 1").error is None
    result = env.execute("print('before the sleep')\nimport time\ntime.sleep(60)", timeout=1)
    assert result.error is not None
    assert "CellTimeout" in result.error and "timeout" in result.error
    assert result.stdout == "before the sleep\n"
    assert "CellTimeout" in result.stderr
    after = env.execute("print(x)")
    assert after.error is None and after.stdout == "1\n"
    assert pid_of(env) == pid


def test_cell_timeout_kwarg_interrupts_a_busy_loop() -> None:
    env = start(cell_timeout=1, interrupt_grace=1)
    try:
        pid = pid_of(env)
        env.execute("x = 'kept'")
        result = env.execute("while True:\n    pass")
        assert result.error is not None and "CellTimeout" in result.error
        assert env.execute("print(x)").stdout == "kept\n"
        assert pid_of(env) == pid
    finally:
        env.close()


def test_except_exception_does_not_swallow_the_timeout(env: SubprocessEnvironment) -> None:
    pid = pid_of(env)
    result = env.execute(
        "import time\ntry:\n    time.sleep(60)\nexcept Exception:\n    pass\nprint('swallowed')",
        timeout=1,
    )
    assert result.error is not None and "CellTimeout" in result.error
    assert "swallowed" not in result.stdout
    assert env.execute("print('next')").stdout == "next\n"
    assert pid_of(env) == pid


def test_the_shorter_of_the_two_timeouts_applies() -> None:
    env = start(cell_timeout=60, interrupt_grace=1)
    try:
        result = env.execute("import time\ntime.sleep(60)", timeout=1)
        assert result.error is not None and "CellTimeout" in result.error
    finally:
        env.close()


# -- 2. a cell that ignores the interrupt gets the agent restarted ----------------------


def test_a_cell_ignoring_the_interrupt_restarts_the_agent(env: SubprocessEnvironment) -> None:
    old_pid = pid_of(env)
    env.add_context({"second": 2})
    env.set_variable("history", [{"role": "user", "content": "kept"}])
    assert env.execute("x = 1").error is None
    with pytest.raises(SandboxRestartedError, match="lost") as info:
        env.execute(IGNORES_INTERRUPTS, timeout=1)
    assert "restarted" in str(info.value)
    new_pid = pid_of(env)
    assert new_pid != old_pid
    assert gone(old_pid)
    with pytest.raises(KeyError):
        env.get_variable("x")
    result = env.execute("print('x' in dir())\nprint(context)\nprint(context_1)\nprint(history)")
    assert result.error is None, result.stderr
    assert result.stdout.splitlines() == [
        "False",
        "the context",
        "{'second': 2}",
        "[{'role': 'user', 'content': 'kept'}]",
    ]
    # the new agent interrupts cells like the old one
    assert "CellTimeout" in (env.execute("while True: pass", timeout=1).error or "")
    assert pid_of(env) == new_pid


@pytest.mark.timeout(60)
def test_the_rlm_loop_reports_timeouts_and_restarts_to_the_lm() -> None:
    seen: list[str] = []
    steps = [
        repl("x = 5\nprint('pid', __import__('os').getpid())"),
        repl("import time\ntime.sleep(60)"),
        repl("print(x)"),
        repl(IGNORES_INTERRUPTS),
        repl("print(context)\nprint('x' in dir())"),
        finish("recovered"),
    ]

    def root(messages: Messages) -> str:
        seen.append(since_last_reply(messages))
        return steps[sum(1 for m in messages if m["role"] == "assistant")]

    rlm = make_rlm(
        Script(root), environment_kwargs={"cell_timeout": 1, "interrupt_grace": 1}, max_errors=5
    )
    assert rlm.completion("the context").response == "recovered"
    timeout_output, kept_output, restart_output, after_restart = seen[2:6]
    assert "CellTimeout" in timeout_output
    assert "\n5\n" in kept_output
    assert "SandboxRestartedError" in restart_output and "lost" in restart_output
    assert "the context" in after_restart and "False" in after_restart
    first_pid = int(seen[1].split("pid ")[1].split()[0])
    assert wait_gone(first_pid)


# -- 3. an agent that dies --------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("code", "status", "named"),
    [
        ("import os\nos._exit(7)", 7, "exit status 7"),
        ("import ctypes\nctypes.string_at(0)", -11, "SIGSEGV"),
        ("import os\nos.kill(os.getpid(), 9)", -9, "SIGKILL"),
    ],
    ids=["os._exit", "segfault", "sigkill"],
)
def test_a_dying_agent_raises_sandbox_crashed(code: str, status: int, named: str) -> None:
    env = start()
    try:
        pid = pid_of(env)
        assert env.execute("print('alive')").stdout == "alive\n"
        with pytest.raises(SandboxCrashedError) as info:
            env.execute(code)
        assert info.value.exit_status == status
        assert named in str(info.value)
        assert gone(pid)
    finally:
        env.close()
    env.close()  # twice is fine


@pytest.mark.timeout(60)
def test_an_agent_killed_from_outside_between_cells() -> None:
    env = start()
    try:
        pid = pid_of(env)
        assert env.execute("x = 1").error is None
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        with pytest.raises(SandboxCrashedError, match="SIGKILL") as info:
            env.execute("print(x)")
        assert info.value.exit_status == -9
        with pytest.raises(SandboxCrashedError):
            env.get_variable("x")
        with pytest.raises(SandboxCrashedError):
            env.set_variable("y", 1)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_crash_propagates_out_of_the_rlm_loop() -> None:
    seen: list[str] = []
    steps = [repl("print('pid', __import__('os').getpid())"), repl("import os\nos._exit(7)")]

    def root(messages: Messages) -> str:
        seen.append(since_last_reply(messages))
        return steps[sum(1 for m in messages if m["role"] == "assistant")]

    rlm = make_rlm(Script(root))
    with pytest.raises(SandboxCrashedError) as info:
        rlm.completion("c")
    assert info.value.exit_status == 7
    pid = int(seen[1].split("pid ")[1].split()[0])
    assert wait_gone(pid)


@pytest.mark.timeout(60)
def test_an_interpreter_that_exits_at_once_fails_the_start(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'cannot run the agent here' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = SubprocessEnvironment(python=str(fake))
    try:
        with pytest.raises(SandboxError, match="cannot run the agent here") as info:
            env.start(Session(subcalls=EchoHandler()))
        assert "exit status 3" in str(info.value)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_an_agent_that_never_gets_ready_fails_within_the_startup_timeout(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    env = SubprocessEnvironment(python=str(fake), startup_timeout=1)
    try:
        with pytest.raises(SandboxError, match="did not start"):
            env.start(Session(subcalls=EchoHandler()))
        pid = env.agent_pid
        assert pid is not None and wait_gone(pid)
    finally:
        env.close()


# -- 4. the memory limit ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_memory_limit_turns_a_huge_allocation_into_a_memory_error() -> None:
    env = start(memory_limit_mb=600)
    try:
        pid = pid_of(env)
        with open(f"/proc/{pid}/limits", encoding="utf-8") as f:
            line = next(x for x in f if x.startswith("Max address space"))
        assert line.split()[3] == str(600 * 1024 * 1024)
        result = env.execute("print('before')\nb = bytearray(2 * 1024**3)")
        assert result.error == "MemoryError"
        assert result.stdout == "before\n"
        assert env.execute("print('survived')").stdout == "survived\n"
        assert pid_of(env) == pid
        # a limit is about the cell's data: well under it, allocations work, repeatedly
        small = env.execute("b = bytearray(200 * 1024**2)\nprint(len(b) // 1024**2)\ndel b")
        assert small.error is None, small.stderr
        assert small.stdout == "200\n"
        assert env.execute("print(len(llm_query_batched(list('abcdefgh'))))").stdout == "8\n"
        assert env.execute("b = bytearray(2 * 1024**3)").error == "MemoryError"
        assert env.execute("print('still')").stdout == "still\n"
    finally:
        env.close()


# -- 5. nothing left running ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_close_stops_the_agent_and_removes_its_socket_directory() -> None:
    env = start()
    pid = pid_of(env)
    socket_dir = os.readlink(f"/proc/{pid}/cwd")
    assert os.path.exists(os.path.join(socket_dir, "agent.sock"))
    env.close()
    assert wait_gone(pid)
    assert not os.path.exists(socket_dir)
    env.close()


@pytest.mark.timeout(60)
def test_close_kills_an_agent_stuck_in_a_cell_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    env = start()
    pid = pid_of(env)
    env.execute("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            # no timeout: runs until the agent is killed
            env.execute(f"open({str(marker)!r}, 'w').close()\n" + IGNORES_INTERRUPTS)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    assert str(env.get_variable("signal")).startswith("<module 'signal'")  # still answers
    env.close()
    assert wait_gone(pid)
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], SandboxError), outcome


HOST_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from rlm_core.environments.base import Session
    from rlm_core.environments.subprocess import SubprocessEnvironment

    env = SubprocessEnvironment(heartbeat_timeout=5)
    env.start(Session(subcalls=None))
    env.add_context("c")
    assert env.execute("x = 1").error is None
    with open(f"/proc/{env.agent_pid}/stat") as f:
        parent = f.read().rsplit(")", 1)[1].split()[1]
    print(env.agent_pid, env.launcher._dir, parent, flush=True)
    if sys.argv[1] == "exit":
        os._exit(0)
    time.sleep(600)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_the_agent_dies_with_its_host(how: str) -> None:
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    agent_pid = None
    socket_dir = None
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        fields = line.split()
        assert len(fields) == 3 and fields[0].isdigit(), host.stderr.read() if host.stderr else line
        agent_pid = int(fields[0])
        socket_dir = fields[1]  # a dead host cannot remove it
        fork_server = int(fields[2])  # the agent's parent
        assert fork_server != host.pid
        if how == "sigkill":
            assert not gone(agent_pid)
            host.kill()
        assert host.wait(timeout=30) == (0 if how == "exit" else -9)
        assert wait_gone(agent_pid, 30.0)
        assert wait_gone(fork_server, 30.0)
        # The agent removes its private directory itself on the way out.
        deadline = time.monotonic() + 10
        while os.path.exists(socket_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(socket_dir)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if agent_pid is not None and not gone(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
        if socket_dir is not None and os.path.basename(socket_dir).startswith("rlm-agent-"):
            shutil.rmtree(socket_dir, ignore_errors=True)


# -- the fork server ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_agents_are_forked_from_a_fork_server_unless_prewarm_is_off() -> None:
    config = {"env": {"RLM_TEST_CONFIGURATION": "forked"}}  # no spare of it exists yet
    forked, fresh = start(**config), start(prewarm=False)
    try:
        server = parent_of(launched(forked))
        assert server != os.getpid() and is_fork_server(server)
        assert parent_of(launched(fresh)) == os.getpid()
        # A forked agent is a session of its own, like a freshly started one.
        assert os.getsid(launched(forked)) == launched(forked)
        again = start(**config)
        try:
            assert parent_of(launched(again)) == server  # one fork server per configuration
            forked.execute("shared = 'only here'")
            assert "NameError" in (again.execute("print(shared)").error or "")
        finally:
            again.close()
    finally:
        forked.close()
        fresh.close()


@pytest.mark.timeout(60)
def test_forked_agents_get_the_hosts_environment_of_now(monkeypatch: pytest.MonkeyPatch) -> None:
    show = "import os, sys\nprint(os.environ.get('RLM_TEST_VALUE'), sys.flags.hash_randomization)"
    monkeypatch.setenv("RLM_TEST_VALUE", "before")
    first = start(env={"RLM_TEST_CONFIGURATION": "env-1"})  # distinct settings: no spare
    try:
        assert first.execute(show).stdout.split() == ["before", "1"]
        server = parent_of(launched(first))
    finally:
        first.close()
    monkeypatch.setenv("RLM_TEST_VALUE", "after")
    second = start(env={"RLM_TEST_CONFIGURATION": "env-2"})
    try:
        assert second.execute(show).stdout.split() == ["after", "1"]
        assert parent_of(launched(second)) == server  # a variable read later: same server
    finally:
        second.close()
    # A variable the interpreter reads as it starts needs a fork server started with it.
    third = start(env={"PYTHONHASHSEED": "0"})
    try:
        assert third.execute(show).stdout.split() == ["after", "0"]
        other = parent_of(launched(third))
        assert other != server and is_fork_server(other)
    finally:
        third.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("code", "status"), [("import os; os._exit(7)", 7), ("import os; os.kill(os.getpid(), 9)", -9)]
)
def test_a_forked_agent_reports_its_exit_status(code: str, status: int) -> None:
    env = start()
    try:
        assert is_fork_server(parent_of(launched(env)))
        with pytest.raises(SandboxCrashedError) as info:
            env.execute(code)
        assert info.value.exit_status == status
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_dead_fork_server_takes_its_agents_and_the_next_start_recovers() -> None:
    env = start()
    try:
        agent = pid_of(env)
        server = parent_of(launched(env))
        assert is_fork_server(server)
        os.kill(server, signal.SIGKILL)
        assert wait_gone(agent, 10.0)  # its parent-death signal
        with pytest.raises(SandboxError):
            env.execute("x = 1")
    finally:
        env.close()
    # The spare started beside the first agent may have asked the server for its fork as
    # the server died: it was then started the usual way, and this start claims it.
    fresh = start()
    try:
        assert fresh.execute("print('ok')").stdout == "ok\n"
        parent = parent_of(launched(fresh))
        assert parent == os.getpid() or (parent != server and is_fork_server(parent))
    finally:
        fresh.close()
    # The spare started beside that one was forked once the death was known: by a new server.
    later = start()
    try:
        assert later.execute("print('ok')").stdout == "ok\n"
        new_server = parent_of(launched(later))
        assert new_server != server and is_fork_server(new_server)
    finally:
        later.close()


@pytest.mark.timeout(60)
def test_agents_start_the_usual_way_when_the_fork_server_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlm_core.environments import forkserver

    def refuse(self: object, *args: object) -> None:
        raise forkserver.ForkServerError("refused for the test")

    monkeypatch.setattr(forkserver.ForkServer, "spawn", refuse)
    env = start(env={"RLM_TEST_CONFIGURATION": "fallback"})  # no spare of this one exists
    try:
        assert parent_of(launched(env)) == os.getpid()
        assert env.execute("print('ok')").stdout == "ok\n"
    finally:
        env.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("prewarm", [True, False], ids=["forked", "fresh"])
def test_an_agent_ending_its_session_runs_exit_handlers(prewarm: bool, tmp_path: Path) -> None:
    from rlm_core._proto.rlm.v1 import agent_pb2 as pb

    marker = tmp_path / "exit-handler-ran"
    env = start(prewarm=prewarm, env={"RLM_TEST_CONFIGURATION": "exit-handlers"})
    try:
        pid = pid_of(env)
        assert is_fork_server(parent_of(pid)) == prewarm
        env.execute(f"import atexit\natexit.register(open, {str(marker)!r}, 'w')")
        client = env._client
        assert client is not None
        client.stub.Close(pb.CloseRequest(), metadata=client.metadata, timeout=10)
        assert wait_gone(pid, 20.0)
        assert marker.exists()  # the interpreter's own exit ran, as for a fresh agent
        assert env.launcher is not None and env.launcher.exit_status(wait=10.0) == 0
    finally:
        env.close()


SHOW_PATH_AND_DESCRIPTORS = textwrap.dedent(
    """
    import os, sys
    kinds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor
            continue
        if int(name) > 2 and (target.startswith("pipe:") or "eventpoll" in target):
            kinds.append(target.split(":")[0] + ("-epoll" if "eventpoll" in target else ""))
    print(sys.path[0] == os.getcwd(), sorted(kinds))
    """
)


@pytest.mark.timeout(60)
def test_a_forked_agent_has_the_path_and_descriptors_of_a_fresh_one() -> None:
    forked = start(env={"RLM_TEST_CONFIGURATION": "path-and-descriptors"})
    fresh = start(prewarm=False)
    try:
        server = parent_of(launched(forked))
        assert is_fork_server(server)
        # ``python -m`` puts the working directory first on sys.path: the fork server's
        # must be private (not /tmp, where anyone can plant modules), and a forked agent
        # imports from its own directory first, as a fresh one does.
        server_dir = os.readlink(f"/proc/{server}/cwd")
        assert os.stat(server_dir).st_mode & 0o077 == 0, server_dir
        own_dir = forked.launcher.shared_dir() if forked.launcher is not None else None
        assert own_dir is not None
        shown_path = forked.execute("import sys; print(sys.path[0])").stdout.strip()
        assert shown_path == os.path.realpath(own_dir)
        # No descriptor of the fork server's (its wake-up pipe, its selector) stays open.
        shown = forked.execute(SHOW_PATH_AND_DESCRIPTORS).stdout
        assert shown == fresh.execute(SHOW_PATH_AND_DESCRIPTORS).stdout
        assert shown.startswith("True ")
    finally:
        forked.close()
        fresh.close()


@pytest.mark.timeout(60)
def test_a_fork_server_that_missed_a_reply_is_not_asked_again(tmp_path: Path) -> None:
    from rlm_core.environments.forkserver import ForkServer, ForkServerError

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    environ = child_env()
    server = ForkServer(sys.executable, environ, str(tmp_path))
    try:
        os.kill(server.process.pid, signal.SIGSTOP)  # too slow to answer in time
        with pytest.raises(ForkServerError):
            server.spawn(["--secrets-stdin"], str(first), environ, timeout=0.5)
        os.kill(server.process.pid, signal.SIGCONT)  # it forks the first agent after all
        try:
            agent = server.spawn(["--secrets-stdin"], str(second), environ, timeout=30)
        except ForkServerError:
            return  # refused: the late answer to the first request cannot be misread
        try:
            # Not the first request's child, whose answer came late.
            assert os.readlink(f"/proc/{agent.pid}/cwd") == str(second)
        finally:
            agent.kill()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_a_late_answer_to_an_interrupted_spawn_is_not_taken_for_the_next(
    tmp_path: Path,
) -> None:
    from rlm_core.environments.forkserver import ForkServer

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    environ = child_env()
    server = ForkServer(sys.executable, environ, str(tmp_path))
    try:
        os.kill(server.process.pid, signal.SIGSTOP)  # it answers late
        ctrl_c = threading.Timer(
            0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
        )
        ctrl_c.start()
        with pytest.raises(KeyboardInterrupt):  # Ctrl+C while an environment starts
            server.spawn(["--secrets-stdin"], str(first), environ, timeout=30)
        ctrl_c.join()
        os.kill(server.process.pid, signal.SIGCONT)  # it forks the first agent after all
        agent = server.spawn(["--secrets-stdin"], str(second), environ, timeout=30)
        try:
            deadline = time.monotonic() + 20
            server_dir = os.readlink(f"/proc/{server.process.pid}/cwd")
            cwd: str | None = server_dir
            while cwd == server_dir and time.monotonic() < deadline:  # until it moves
                time.sleep(0.02)
                try:
                    cwd = os.readlink(f"/proc/{agent.pid}/cwd")
                except OSError:
                    cwd = None  # gone: the first request's child, whose stdin was closed
            assert cwd == str(second)
        finally:
            agent.kill()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_an_agent_whose_fork_server_dies_as_it_answers_still_gets_an_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlm_core.environments import forkserver

    environ = child_env()
    server = forkserver.ForkServer(sys.executable, environ, str(tmp_path))

    class DiesAsItAnswers(forkserver.ForkedProcess):
        def __init__(self, *args: Any) -> None:
            # The server dies after its answer, before spawn() has recorded the agent.
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
            time.sleep(1.0)  # its end is noticed meanwhile
            super().__init__(*args)

    monkeypatch.setattr(forkserver, "ForkedProcess", DiesAsItAnswers)
    try:
        agent = server.spawn(["--secrets-stdin"], str(tmp_path), environ, timeout=30)
        try:
            assert agent.wait(timeout=20) == forkserver.UNKNOWN_EXIT
        finally:
            agent.kill()
    finally:
        server.stop()


DIES_AFTER_FORKING = textwrap.dedent(
    """
    import os, signal, sys, time

    if "--fork-server" in sys.argv:
        fork = os.fork

        def fork_then_die():
            pid = fork()
            if pid:  # the agent is forked and arms its parent-death signal; no answer comes
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGKILL)
            return pid

        os.fork = fork_then_die
    """
)


@pytest.mark.timeout(60)
def test_an_agent_starts_the_usual_way_when_the_fork_server_dies_after_forking(
    tmp_path: Path,
) -> None:
    (tmp_path / "sitecustomize.py").write_text(DIES_AFTER_FORKING)
    path = os.pathsep.join([str(tmp_path), PACKAGE_ROOT])
    env = SubprocessEnvironment(env={"PYTHONPATH": path})
    try:
        # The orphaned forked agent removes its directory as it dies: the agent started
        # instead must not be given that directory.
        env.start(Session(subcalls=EchoHandler()))
        assert parent_of(launched(env)) == os.getpid()
        assert env.execute("print('ok')").stdout == "ok\n"
    finally:
        env.close()


FAILS_ITS_SECOND_FORK = textwrap.dedent(
    """
    import errno, os, sys

    if "--fork-server" in sys.argv:
        fork, calls, server = os.fork, [], os.getpid()

        def fork_but_the_second_time():
            if os.getpid() == server:  # the server's own forks, not its agents'
                calls.append(1)
                if len(calls) == 2:  # as under a process limit: the server answers an error
                    raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            return fork()

        os.fork = fork_but_the_second_time
    """
)


@pytest.mark.timeout(60)
def test_a_fork_that_fails_leaves_the_other_forked_agents_running(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(FAILS_ITS_SECOND_FORK)
    config: dict[str, Any] = {
        "env": {"PYTHONPATH": os.pathsep.join([str(tmp_path), PACKAGE_ROOT])},
        "startup_timeout": 20,
    }
    first = start(**config)
    try:
        server = parent_of(launched(first))
        assert is_fork_server(server)
        # The spare started next fails to fork and is started the usual way; the second
        # environment waits for it and claims it.
        second = start(**config)
        try:
            assert parent_of(launched(second)) == os.getpid()
            assert second.execute("print('ok')").stdout == "ok\n"
        finally:
            second.close()
        assert not gone(server)  # the fork server was fine: it answered
        assert first.execute("print('still here')").stdout == "still here\n"
    finally:
        first.close()


FORKED_HOST_SCRIPT = """
import os, sys
from rlm_core import RLM, ForkedHostError

CELL = "```repl\\nimport os; answer['content'] = str(os.getpid()); answer['ready'] = True\\n```"

def rlm(environment, **kwargs):
    return RLM(backend="scripted", backend_kwargs={"responses": [CELL] * 3},
               environment=environment, **kwargs)

def run(environment):
    r = rlm(environment)
    try:
        return r.completion("c").response
    finally:
        r.close()

if sys.argv[1] == "after":
    print("parent", run("subprocess"), flush=True)  # gRPC has run in this process
kept = rlm("subprocess", persistent=True)  # a connection open across the fork
print("kept", kept.completion("c").response, flush=True)
pid = os.fork()
if pid == 0:
    try:
        print("child", run("subprocess"), flush=True)
    except ForkedHostError as exc:
        print("child refused", type(exc).__name__, flush=True)
    print("child local", run("local"), flush=True)
    kept.close()  # the parent's: left alone
    sys.exit(0)  # exit handlers and finalisers must not touch the parent's gRPC state
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
print("kept", kept.completion("c").response, flush=True)
kept.close()
print("parent", run("subprocess"), flush=True)
"""


@pytest.mark.timeout(120)
def test_a_host_forked_after_using_the_bridge_gets_a_clear_error_and_harms_nothing() -> None:
    with Host(FORKED_HOST_SCRIPT, "after") as host:
        status, out, err = host.finish()
        assert status == 0, err
        lines = [line.split() for line in out.splitlines()]
        assert [line[:2] for line in lines] == [
            ["parent", lines[0][1]],
            ["kept", lines[1][1]],
            ["child", "refused"],
            ["child", "local"],
            ["child", "exit"],
            ["kept", lines[1][1]],  # the same agent: the child did not stop it
            ["parent", lines[6][1]],
        ], out
        assert lines[2][2] == "ForkedHostError" and lines[4][2] == "0"
        assert host.leftovers() == []


@pytest.mark.timeout(120)
def test_a_host_forked_before_using_the_bridge_starts_its_own_agents() -> None:
    script = FORKED_HOST_SCRIPT.replace('kept = rlm("subprocess", persistent=True)', "kept = None")
    script = script.replace('print("kept", kept.completion("c").response, flush=True)', "")
    script = script.replace("kept.close()", "")
    with Host(script, "before") as host:
        status, out, err = host.finish()
        assert status == 0, err
        lines = [line.split() for line in out.splitlines()]
        assert [line[0] for line in lines] == ["child", "child", "child", "parent"], out
        assert lines[0][1].isdigit() and lines[3][1].isdigit()
        assert host.leftovers() == []


@pytest.mark.timeout(60)
def test_an_agent_whose_host_never_speaks_exits_by_itself() -> None:
    directory = tempfile.mkdtemp(prefix="rlm-test-")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlm_core.agent",
            "--listen",
            f"unix:{directory}/agent.sock",
            "--secrets-stdin",
            "--heartbeat-timeout",
            "2",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )
    try:
        assert agent.stdin is not None and agent.stdout is not None
        assert agent.stderr is not None
        agent.stdin.write(json.dumps({"token": "never-used-token"}) + "\n")
        agent.stdin.close()
        assert agent.stdout.readline().startswith("RLM-AGENT-READY")
        assert agent.wait(timeout=30) == 0
        assert "no word from the host" in agent.stderr.read()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        shutil.rmtree(directory, ignore_errors=True)


# -- 6. contexts of any size ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_50_mib_context_streams_in_and_cells_do_not_resend_it() -> None:
    payload = os.urandom(25 * 1024 * 1024).hex()
    assert len(payload) == 50 * 1024 * 1024
    digest = hashlib.sha256(payload.encode()).hexdigest()
    env = start()
    try:
        assert env.add_context(payload) == 0
        result = env.execute(
            "import hashlib\n"
            "print(len(context) == 50 * 1024 * 1024, context is context_0)\n"
            "print(context[:32], context[-32:], context[3 * 1024 * 1024 + 5 : 3 * 1024 * 1024 + 37])\n"
            "print(hashlib.sha256(context.encode()).hexdigest())"
        )
        assert result.error is None, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "True True"
        middle = payload[3 * 1024 * 1024 + 5 : 3 * 1024 * 1024 + 37]
        assert lines[1] == f"{payload[:32]} {payload[-32:]} {middle}"
        assert lines[2] == digest
        pid = pid_of(env)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        assert len(cmdline) < 4096
        assert payload[:64].encode() not in cmdline + environ
        for i in range(20):
            cell = env.execute(f"n = {i}")
            assert cell.error is None and cell.final_answer is None
        assert env.get_variable("n") == 19
    finally:
        env.close()


def test_multibyte_text_across_chunk_boundaries(env: SubprocessEnvironment) -> None:
    text = "a" + "é€😀" * (400 * 1024)  # about 3.6 MB: characters straddle 1 MiB chunks
    env.add_context(text, 0)
    result = env.execute(
        "import hashlib\nprint(len(context), hashlib.sha256(context.encode()).hexdigest())"
    )
    assert result.stdout.split() == [str(len(text)), hashlib.sha256(text.encode()).hexdigest()]


def test_bytes_dict_and_list_contexts_round_trip(env: SubprocessEnvironment) -> None:
    raw = bytes(range(256)) * 3
    nested = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    items = [1, "two", None, {"k": [3]}]
    assert env.add_context(raw) == 1
    assert env.add_context(nested) == 2
    assert env.add_context(items) == 3
    assert env.add_context("the second text") == 4
    assert env.get_context_count() == 5
    result = env.execute(
        "print(type(context_1).__name__, type(context_2).__name__, type(context_3).__name__)\n"
        f"print(context_1 == {raw!r}, context_2 == {nested!r}, context_3 == {items!r})\n"
        "print(context, '|', context_0, '|', context_4)"
    )
    assert result.error is None, result.stderr
    assert result.stdout.splitlines() == [
        "bytes dict list",
        "True True True",
        "the context | the context | the second text",
    ]
    assert env.get_variable("context_2") == nested
    assert env.get_variable("context_3") == items
    assert env.get_variable("context_1") == repr(raw)  # bytes are not JSON: repr


def test_empty_contexts(env: SubprocessEnvironment) -> None:
    env.add_context("", 0)
    env.add_context(b"")
    env.add_context([])
    result = env.execute("print(repr(context), repr(context_1), repr(context_2))")
    assert result.stdout == "'' b'' []\n"


# -- 7. variables -----------------------------------------------------------------------


def test_variables_round_trip_as_json(env: SubprocessEnvironment) -> None:
    value = {"n": 1, "f": 2.5, "s": "ß", "l": [None, True, False], "d": {"x": []}}
    env.set_variable("v", value)
    assert env.get_variable("v") == value
    assert env.execute("print(type(v).__name__, v['l'])").stdout == "dict [None, True, False]\n"
    env.set_variable("items", [1])
    env.extend_variable("items", [2, {"three": 3}])
    assert env.get_variable("items") == [1, 2, {"three": 3}]
    assert env.execute("items.append(4)\nprint(len(items))").stdout == "4\n"
    assert env.get_variable("items")[-1] == 4
    env.set_variable("v", "replaced")
    assert env.get_variable("v") == "replaced"


def test_non_json_values_come_back_as_repr(env: SubprocessEnvironment) -> None:
    env.execute(
        "s = {1, 2}\ndef f():\n    return 1\nclass K:\n    def __repr__(self):\n"
        "        return 'K!'\nk = K()"
    )
    assert env.get_variable("s") == "{1, 2}"
    assert str(env.get_variable("f")).startswith("<function f")
    assert env.get_variable("k") == "K!"


def test_variable_errors(env: SubprocessEnvironment) -> None:
    with pytest.raises(KeyError):
        env.get_variable("missing")
    with pytest.raises(SandboxError, match="JSON"):
        env.set_variable("bad", {1, 2})
    env.set_variable("n", 3)
    with pytest.raises(SandboxError, match="cannot extend"):
        env.extend_variable("n", [1])
    with pytest.raises(SandboxError, match="cannot extend"):
        env.extend_variable("missing", [1])
    assert env.get_variable("n") == 3  # the session is fine after the failures


# -- 8. custom tools over the bridge ----------------------------------------------------


def test_custom_tools_cross_the_bridge() -> None:
    calls: list[Any] = []

    def triple(x: Any, scale: int = 1) -> dict[str, Any]:
        calls.append((x, scale))
        return {"value": x * 3 * scale, "list": [x]}

    def boom(x: Any) -> None:
        raise ValueError(f"bad input {x}")

    tools = parse_tools(
        {
            "triple": {"tool": triple, "description": "Triples"},
            "boom": boom,
            "unjson": lambda: {1, 2},
            "RATE": 21,
            "TABLE": {"rows": [[1, "a"], [2, "b"]]},
            "helper": {"source": "def helper(x):\n    return x * 3"},
        }
    )
    env = start(Session(subcalls=EchoHandler(), custom_tools=tools))
    try:
        result = env.execute(
            "print(triple(2), triple('ab', scale=2))\n"
            "print(RATE, TABLE['rows'][1], type(TABLE).__name__)\n"
            "print(helper(4), helper('x'))\n"
            "try:\n    boom(1)\nexcept Exception as e:\n    print(type(e).__name__, '|', e)\n"
            "try:\n    unjson()\nexcept Exception as e:\n    print(type(e).__name__, '|', e)\n"
            "try:\n    triple({1})\nexcept TypeError as e:\n    print('TypeError', '|', e)"
        )
        assert result.error is None, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "{'value': 6, 'list': [2]} {'value': 'abababababab', 'list': ['ab']}"
        assert lines[1] == "21 [2, 'b'] dict"
        assert lines[2] == "12 xxx"
        kind, message = lines[3].split(" | ")
        assert kind == "HostToolError"
        assert "ValueError" in message and "bad input 1" in message and "boom" in message
        kind, message = lines[4].split(" | ")
        assert kind == "HostToolError" and "JSON" in message
        kind, message = lines[5].split(" | ")
        assert "JSON" in message
        assert calls == [(2, 1), ("ab", 2)]
        shown = set(env.execute("pass").locals)
        # Data tools are variables; function tools (host or source) are tools, not variables.
        assert shown >= {"RATE", "TABLE"} and "helper" not in shown
    finally:
        env.close()


def test_custom_tools_in_an_rlm_run() -> None:
    rate = 7
    calls: list[int] = []

    def lookup(key: str) -> list[int]:
        calls.append(len(key))
        return [len(key), rate]

    script = Script(
        [
            repl("got = lookup(context)\nprint(got, helper(RATE))"),
            repl("answer['content'] = f'{got[0] * RATE}-{helper(1)}'\nanswer['ready'] = True"),
        ]
    )
    rlm = make_rlm(
        script,
        custom_tools={
            "lookup": {"tool": lookup, "description": "Looks up"},
            "RATE": rate,
            "helper": {"source": "def helper(x):\n    return x * 3"},
        },
    )
    assert rlm.completion("abcd").response == "28-3"
    assert calls == [4]


def test_a_non_json_tool_value_fails_at_start() -> None:
    env = SubprocessEnvironment()
    session = Session(subcalls=EchoHandler(), custom_tools=parse_tools({"bad": {1, 2}}))
    try:
        with pytest.raises(SandboxError, match=r"'bad'.*JSON") as info:
            env.start(session)
        assert "set" in str(info.value)
        pid = env.agent_pid
        if pid is not None:
            assert wait_gone(pid)
    finally:
        env.close()


# -- same-host context hand-over -----------------------------------------------------------


def _big_payload(kind: str) -> Any:
    """About 5-12 MB of each context kind, above the same-host file threshold."""
    if kind == "ascii":  # sent piece by piece, never encoded in full on the host
        return "".join(f"{i:07d} line of plain text\n" for i in range(300_000))
    if kind == "utf8":
        return "".join(chr(0x41 + i % 26) + "é" for i in range(4 * 1024 * 1024))
    if kind == "bytes":
        return bytes(range(256)) * (20 * 1024)
    return {"rows": [{"id": i, "name": f"ü-{i}"} for i in range(300_000)]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["ascii", "utf8", "bytes", "json"])
@pytest.mark.parametrize("via_file", [True, False])
def test_large_contexts_arrive_whole_by_file_or_by_stream(
    via_file: bool, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm_core.environments.agent as agent_module

    if not via_file:
        monkeypatch.setattr(agent_module, "SHARED_FILE_MIN_BYTES", 1 << 62)
    payload = _big_payload(kind)
    env = start()
    try:
        shared = env.launcher.shared_dir() if env.launcher else None
        assert shared is not None
        env.add_context(payload)
        result = env.execute(
            "import hashlib, json\n"
            "data = context if isinstance(context, bytes) else (\n"
            "    context.encode() if isinstance(context, str) else json.dumps(context).encode())\n"
            "print(type(context).__name__, len(context), hashlib.sha256(data).hexdigest())"
        )
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = json.dumps(payload).encode()
        expected = [type(payload).__name__, str(len(payload)), hashlib.sha256(data).hexdigest()]
        assert result.stdout.split() == expected, result.stderr
        assert [n for n in os.listdir(shared) if n.startswith("context-")] == []
        # The hand-over file is unmapped once the load is answered: nothing keeps it alive.
        deadline = time.monotonic() + 10
        while "context-" in Path(f"/proc/{pid_of(env)}/maps").read_text():
            assert time.monotonic() < deadline, "the payload file is still mapped"
            time.sleep(0.05)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_payload_file_shorter_than_announced_is_rejected_and_deleted() -> None:
    from rlm_core._proto.rlm.v1 import agent_pb2 as pb

    env = start()
    try:
        client = env._client
        shared = env.launcher.shared_dir() if env.launcher else None
        assert client is not None and shared is not None
        Path(shared, "context-short.bin").write_bytes(b"only 12 byte")
        chunk = pb.ContextChunk(
            index=3, kind=pb.CONTEXT_KIND_TEXT, total_bytes=4096, path="context-short.bin"
        )
        with pytest.raises(grpc.RpcError) as info:
            client.stub.LoadContext(iter([chunk]), metadata=client.metadata)
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert "received 12 of 4,096 bytes" in (info.value.details() or "")
        assert not Path(shared, "context-short.bin").exists()
        with pytest.raises(KeyError):
            env.get_variable("context_3")
        assert env.execute("print('still here')").stdout == "still here\n"
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_payload_files_are_only_read_from_the_shared_directory(tmp_path: Path) -> None:
    from rlm_core._proto.rlm.v1 import agent_pb2 as pb

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the agent")
    env = start()
    try:
        client = env._client
        assert client is not None
        for name in (str(secret), "../" + secret.name, "/etc/hostname"):
            chunk = pb.ContextChunk(index=5, kind=pb.CONTEXT_KIND_TEXT, total_bytes=5, path=name)
            with pytest.raises(grpc.RpcError) as info:
                client.stub.LoadContext(iter([chunk]), metadata=client.metadata)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert secret.read_text() == "not for the agent"
        with pytest.raises(KeyError):
            env.get_variable("context_5")
    finally:
        env.close()


# -- robustness ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_cell_holding_the_gil_longer_than_the_heartbeat_timeout_keeps_the_session() -> None:
    """A long C call starves the agent's stream reader and watchdog alike; the queued
    heartbeats are not missing, so the agent must not shut itself down."""
    env = start(heartbeat_interval=0.2, heartbeat_timeout=1.0)
    try:
        pid = pid_of(env)
        env.execute("keep = 42")
        result = env.execute("x = 3 ** (10 ** 7)\nprint('done')")  # ~2 s holding the GIL
        assert result.stdout == "done\n", result.stderr
        assert env.get_variable("keep") == 42
        assert pid_of(env) == pid and not gone(pid)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_a_host_tool_raising_system_exit_fails_the_call_instead_of_hanging() -> None:
    def strict(value: int) -> int:
        if value < 0:
            raise SystemExit("usage: strict VALUE")
        return value

    env = start(Session(subcalls=EchoHandler(), custom_tools=parse_tools({"strict": strict})))
    try:
        result = env.execute(
            "try:\n    strict(-1)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print(strict(5))"
        )
        lines = result.stdout.splitlines()
        assert lines[0].startswith("HostToolError SystemExit: usage: strict VALUE")
        assert lines[1] == "5"
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_close_also_stops_processes_the_cells_started() -> None:
    env = start()
    try:
        result = env.execute(
            "import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid)"
        )
        grandchild = int(result.stdout)
        assert not gone(grandchild)
    finally:
        env.close()
    assert wait_gone(grandchild)


@pytest.mark.timeout(60)
def test_a_failed_spawn_leaves_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for _ in range(3):
        env = SubprocessEnvironment(python=str(tmp_path / "no-such-python"), prewarm=False)
        with pytest.raises(SandboxError):
            env.start(Session(subcalls=EchoHandler()))
        env.close()
    assert os.listdir(scratch) == []


EXITS_WITH_AN_OPEN_SESSION = """
import atexit, threading


def report():  # registered first, so it runs after rlm-core's own exit handlers
    from rlm_core.bridge.client import _is_grpc_helper

    alive = [t.name for t in threading.enumerate() if _is_grpc_helper(t)]
    print("gRPC helper threads at exit:", len(alive), flush=True)


atexit.register(report)

from rlm_core.environments.base import Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from scripts import EchoHandler

env = SubprocessEnvironment()
env.start(Session(subcalls=EchoHandler()))
print(env.execute("print(llm_query('hi'))").stdout.strip(), flush=True)
"""


@pytest.mark.timeout(120)
def test_a_host_exiting_with_a_session_open_leaves_no_grpc_thread_running() -> None:
    # A gRPC daemon thread frozen by the interpreter's shutdown while holding a call's lock
    # would make that call's finaliser, and so the exit, wait for ever.
    with Host(EXITS_WITH_AN_OPEN_SESSION) as host:
        status, out, err = host.finish()
        assert status == 0, err
        assert out.splitlines() == ["llm:hi", "gRPC helper threads at exit: 0"], out
        assert host.leftovers() == []
