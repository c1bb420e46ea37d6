"""Cells that attack the REPL, the agent or the host: each is reported as the cell's own
error, or undone, and never hangs the host, ends the run or outlives ``close()``."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hosts import PACKAGE_ROOT, Host, gone, kill_all, wait_gone
from scripts import EchoHandler, finish, repl

from rlm_core import RLM
from rlm_core.agent.server import AgentServicer, _Cell
from rlm_core.environments.base import Environment, Session
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.exceptions import SandboxCrashedError
from rlm_core.repl import MAX_TRACEBACK_FRAMES

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and signals"),
]


def started(kind: str, **kwargs: Any) -> Environment:
    env: Environment = LocalEnvironment() if kind == "local" else SubprocessEnvironment(**kwargs)
    env.start(Session(subcalls=EchoHandler()))
    return env


@pytest.fixture(params=["local", "subprocess"])
def env(request: pytest.FixtureRequest) -> Iterator[Environment]:
    e = started(request.param, cell_timeout=60)
    yield e
    e.close()


@pytest.fixture
def agent() -> Iterator[SubprocessEnvironment]:
    e = SubprocessEnvironment(cell_timeout=30)
    e.start(Session(subcalls=EchoHandler()))
    yield e
    e.close()


# -- the REPL's own names and the interpreter's ------------------------------------------


def test_builtins_deleted_from_the_builtins_module_come_back(env: Environment) -> None:
    result = env.execute("import builtins\ndel builtins.len\ndel builtins.print\nx = 1")
    assert result.error is None, result.stderr
    assert env.execute("print(len('abc'), x)").stdout == "3 1\n"
    import builtins

    assert builtins.len is len and builtins.print is print  # the host's too, on local


def test_a_rebound_builtins_namespace_is_undone(env: Environment) -> None:
    env.execute("__builtins__ = {}")
    assert env.execute("print(len('ab'))").stdout == "2\n"
    env.execute("__builtins__['len'] = None\ndel __builtins__['print']")
    assert env.execute("print(len('abc'))").stdout == "3\n"


def test_replaced_standard_streams_are_put_back(env: Environment) -> None:
    env.execute("print('warm')")  # the first cell installs the per-thread routing
    streams = sys.stdin, sys.stdout, sys.stderr
    env.execute("import sys\nsys.stdout = None\nsys.stderr = open(__import__('os').devnull, 'w')")
    assert (sys.stdin, sys.stdout, sys.stderr) == streams  # the host's own, on local
    result = env.execute("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_host_output_through_a_stream_whose_write_returns_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terse:
        """Like a Ray worker's stdout: ``write`` returns ``None``."""

        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    terse = Terse()
    monkeypatch.setattr(sys, "stdout", terse)
    env = started("local")
    try:
        assert env.execute("print('in the cell')").stdout == "in the cell\n"
        print("on the host")  # through the routing stream, to the terse one
    finally:
        env.close()
    assert terse.text == "on the host\n"


def test_an_answer_that_cannot_be_turned_into_text_is_the_cells_error(env: Environment) -> None:
    result = env.execute(
        "class Opaque:\n"
        "    def __str__(self):\n"
        "        raise ValueError('no text')\n"
        "answer['content'] = Opaque()\n"
        "answer['ready'] = True"
    )
    assert result.final_answer is None
    assert result.error is not None and "AnswerError" in result.error
    assert "ValueError: no text" in result.error
    assert env.execute("print('still here')").stdout == "still here\n"
    fixed = env.execute("answer['content'] = 'done'")
    assert fixed.error is None and fixed.final_answer == "done"


def test_an_answer_whose_readiness_cannot_be_told_is_the_cells_error(env: Environment) -> None:
    result = env.execute(
        "class Unsure:\n"
        "    def __bool__(self):\n"
        "        raise RuntimeError('cannot say')\n"
        "answer['ready'] = Unsure()"
    )
    assert result.error is not None and "RuntimeError: cannot say" in result.error
    assert env.execute("answer['ready'] = False\nprint('ok')").stdout == "ok\n"


def test_an_answer_dict_with_a_hostile_get_is_read_as_a_dict(env: Environment) -> None:
    result = env.execute(
        "class Sly(dict):\n"
        "    def get(self, *args):\n"
        "        raise RuntimeError('gotcha')\n"
        "answer = Sly(content='the answer', ready=True)"
    )
    assert result.error is None, result.stderr
    assert result.final_answer == "the answer"


def test_a_namespace_key_that_is_not_a_string_is_ignored(env: Environment) -> None:
    result = env.execute("globals()[1] = 'one'\ny = 2")
    assert result.error is None, result.stderr
    assert result.locals.get("y") == 2


def test_unbounded_recursion_is_an_ordinary_error_and_keeps_the_state(env: Environment) -> None:
    result = env.execute(
        "import sys\n"
        "kept = 'yes'\n"
        "sys.setrecursionlimit(10**6)\n"
        "def dive(n):\n"
        "    return dive(n + 1)\n"
        "dive(0)"
    )
    assert result.error is not None and result.error.startswith("RecursionError")
    assert f"only the innermost {MAX_TRACEBACK_FRAMES} frames" in result.stderr
    assert "return dive(n + 1)" in result.stderr
    assert len(result.stderr) < 20_000
    assert env.execute("print(kept)").stdout == "yes\n"
    if isinstance(env, LocalEnvironment):  # the host's own limit is back
        assert sys.getrecursionlimit() < 10**6


# -- text that is not valid UTF-8 ---------------------------------------------------------


def test_lone_surrogates_do_not_end_the_session(env: Environment) -> None:
    remote = isinstance(env, SubprocessEnvironment)
    result = env.execute("print('a\\udcff')")
    assert result.error is None, result.stderr
    assert result.stdout == ("a\\udcff\n" if remote else "a\udcff\n")
    result = env.execute("answer['content'] = 'b\\udcfe'\nanswer['ready'] = True")
    assert result.final_answer == ("b\\udcfe" if remote else "b\udcfe")
    env.execute("answer['ready'] = False\nname = 'c\\udc80'")
    assert env.get_variable("name") == "c\udc80"  # values travel exactly
    env.set_variable("given", ["d\udcff"])
    assert env.execute("print(ascii(given))").stdout == "['d\\udcff']\n"
    reply = env.execute("print(ascii(llm_query('e\\udcff')))")
    assert reply.stdout == "'llm:e\\udcff'\n"
    bad = env.execute("raise ValueError('f\\udcff')")
    assert bad.error is not None and "ValueError: f" in bad.error


@pytest.mark.parametrize("kind", ["local", "subprocess"])
def test_a_context_with_lone_surrogates_arrives_exactly(kind: str) -> None:
    env = started(kind)
    try:
        env.add_context("x\udcffy" * 3)
        env.add_context({"name": "\udc80"})
        result = env.execute("print(ascii(context), ascii(context_1))")
        assert result.stdout == "'x\\udcffyx\\udcffyx\\udcffy' {'name': '\\udc80'}\n"
    finally:
        env.close()


@pytest.mark.parametrize("kind", ["local", "subprocess"])
def test_an_rlm_run_over_surrogates_finishes(kind: str) -> None:
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [repl("print(context)"), finish("found \udcff")]},
        environment=kind,
    )
    try:
        result = rlm.completion("text with \udcff in it")
    finally:
        rlm.close()
    assert result.response.startswith("found ")


@pytest.mark.parametrize("kind", ["local", "subprocess"])
def test_a_run_goes_on_after_cells_that_break_the_repls_bookkeeping(kind: str) -> None:
    hostile = [
        "class Opaque:\n    def __str__(self):\n        raise ValueError('no text')\n"
        "answer['content'] = Opaque()\nanswer['ready'] = True",
        "import builtins\ndel builtins.len\ndel builtins.print\n__builtins__ = {}",
        "x = 'a\udcff'  # code with a lone surrogate in it\nprint(x)",
    ]
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [repl(code) for code in hostile] + [finish("survived")]},
        environment=kind,
    )
    try:
        result = rlm.completion("context")
    finally:
        rlm.close()
    assert result.response == "survived"


# -- the agent's cell loop ------------------------------------------------------------------


def test_the_agents_cell_loop_reports_its_own_failure_as_the_cells_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer = AgentServicer(lambda why: None, heartbeat_timeout=30.0)

    def broken(code: str, **kwargs: Any) -> Any:
        raise RuntimeError("bookkeeping broke")

    monkeypatch.setattr(servicer.repl, "run", broken)
    cell = _Cell("x = 1", 0.0, threading.Event())
    servicer.cells.put(cell)
    servicer.cells.put(None)
    servicer.run_cells_forever(threading.Event())  # returns: it did not die on the cell
    result, timed_out = cell.result
    assert cell.done.is_set() and not timed_out
    assert "RuntimeError" in result.error and "bookkeeping broke" in result.error


@pytest.mark.parametrize("prewarm", [True, False], ids=["forked", "started"])
def test_odd_bytes_on_the_agents_fd_1_and_2_do_not_block_later_output(prewarm: bool) -> None:
    env = SubprocessEnvironment(cell_timeout=20, prewarm=prewarm)
    env.start(Session(subcalls=EchoHandler()))
    try:
        odd = env.execute("import os\nos.write(1, b'\\xff\\xfe\\n')\nos.write(2, b'\\xe9\\x80\\n')")
        assert odd.error is None, odd.stderr
        # Far more than a pipe holds: it only fits if the host still drains both pipes.
        big = env.execute("import os\nos.write(1, b'x' * (1 << 20))\nos.write(2, b'y' * (1 << 20))")
        assert big.error is None, big.stderr
    finally:
        env.close()


@pytest.mark.parametrize(
    "disarm",
    [
        "signal.signal(signal.SIGUSR1, signal.SIG_IGN)",
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})",
        "signal.signal(signal.SIGUSR1, lambda *a: None)",
    ],
    ids=["ignored", "blocked", "replaced"],
)
def test_an_interrupt_disarmed_by_an_earlier_cell_still_times_out_the_next(disarm: str) -> None:
    env = SubprocessEnvironment(cell_timeout=1, interrupt_grace=10)
    env.start(Session(subcalls=EchoHandler()))
    try:
        pid = env.agent_pid
        assert env.execute(f"import signal\n{disarm}\nkept = 7").error is None
        result = env.execute("while True:\n    pass")
        assert result.error is not None and "CellTimeout" in result.error
        assert env.agent_pid == pid  # not restarted
        assert env.execute("print(kept)").stdout == "7\n"
    finally:
        env.close()


def test_a_timed_cell_after_print_was_deleted_times_out_and_keeps_the_state() -> None:
    env = SubprocessEnvironment(cell_timeout=1, interrupt_grace=10)
    env.start(Session(subcalls=EchoHandler()))
    try:
        assert env.execute("import builtins\ndel builtins.print\nkept = 3").error is None
        result = env.execute("while True:\n    pass")
        assert result.error is not None and "CellTimeout" in result.error
        assert env.execute("print(kept)").stdout == "3\n"
    finally:
        env.close()


def test_a_sigterm_from_a_cell_is_reported_as_that_not_as_a_lost_host(
    agent: SubprocessEnvironment,
) -> None:
    with pytest.raises(SandboxCrashedError) as info:
        agent.execute(
            "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nimport time\ntime.sleep(30)"
        )
    assert info.value.exit_status == -signal.SIGTERM
    assert "SIGTERM" in str(info.value)
    assert "host" not in str(info.value)


# -- nothing outlives close() or the host ---------------------------------------------------

DETACHED_CHILDREN = (
    "import subprocess, sys\n"
    "session = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    "daemon = subprocess.run([sys.executable, '-c', '''\n"
    "import os, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "os.setsid()\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "print(os.getpid(), flush=True)\n"
    "quiet = os.open(os.devnull, os.O_RDWR)\n"
    "os.dup2(quiet, 1)\n"
    "os.dup2(quiet, 2)\n"
    "time.sleep(300)\n"
    "'''], capture_output=True, text=True).stdout.strip()\n"
    "print(session.pid, daemon)"
)


def test_close_ends_processes_that_left_the_agents_session(agent: SubprocessEnvironment) -> None:
    result = agent.execute(DETACHED_CHILDREN)
    assert result.error is None, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    try:
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        assert all(os.getsid(p) != os.getsid(agent.agent_pid or 0) for p in pids)
        agent.close()
        assert wait_gone(pids, 10.0) == []
    finally:
        kill_all(pids)


HOST_WITH_DETACHED_CHILDREN = """
import sys, time
from rlm_core.environments.base import Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from scripts import EchoHandler

env = SubprocessEnvironment()
env.start(Session(subcalls=EchoHandler()))
children = env.execute(sys.argv[1]).stdout.split()
print(env.agent_pid, env.launcher.pid, *children, flush=True)
if sys.argv[2] == "wait":
    time.sleep(300)
"""


@pytest.mark.parametrize("end", ["exits without close", "is killed"])
def test_a_host_takes_its_agent_and_every_detached_child_with_it(end: str) -> None:
    how = "exit" if end == "exits without close" else "wait"
    with Host(HOST_WITH_DETACHED_CHILDREN, DETACHED_CHILDREN, how) as host:
        pids = host.read_pids()
        assert len(pids) == 4
        if how == "wait":
            assert not any(gone(p) for p in pids)
            os.kill(host.pid, signal.SIGKILL)
        host.process.wait(timeout=60)
        assert wait_gone(pids) == []
        assert host.leftovers() == []


HOST_WITH_A_STUBBORN_CELL = """
import sys, threading, time
from rlm_core.environments.base import Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from scripts import EchoHandler

env = SubprocessEnvironment()
env.start(Session(subcalls=EchoHandler()))
env.execute("import signal\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
print(env.agent_pid, env.launcher.pid, flush=True)
# A catastrophic regex: it holds the GIL for hours, so no Python thread of the agent runs.
cell = "import re\\nprint('holding', flush=True)\\nre.match(r'(a+)+$', 'a' * 64 + 'b')"
threading.Thread(target=env.execute, args=(cell,), daemon=True).start()
time.sleep(300)
"""


def test_an_agent_ends_with_its_killed_host_whatever_the_cell_does() -> None:
    with Host(HOST_WITH_A_STUBBORN_CELL) as host:
        pids = host.read_pids()
        agent = pids[0]
        with open(f"/proc/{agent}/stat", encoding="utf-8") as f:
            before = int(f.read().rsplit(")", 1)[1].split()[11])  # user CPU time
        while True:  # the regex is running once the agent burns CPU
            with open(f"/proc/{agent}/stat", encoding="utf-8") as f:
                if int(f.read().rsplit(")", 1)[1].split()[11]) > before + 20:
                    break
            threading.Event().wait(0.05)
        os.kill(host.pid, signal.SIGKILL)
        assert wait_gone(pids) == []
        assert host.leftovers() == []


def test_a_fork_server_whose_host_hangs_up_removes_its_directory(tmp_path: Any) -> None:
    from rlm_core.environments.forkserver import ForkServer

    server = ForkServer(sys.executable, dict(os.environ, PYTHONPATH=PACKAGE_ROOT), str(tmp_path))
    try:
        assert os.path.isdir(server.dir)
        # As when the host dies: the server sees its control socket close.
        server._control.shutdown(socket.SHUT_RDWR)
        assert server.process.wait(timeout=30) == 0
        assert not os.path.exists(server.dir)
    finally:
        server.stop()
