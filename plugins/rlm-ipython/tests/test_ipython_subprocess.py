"""``kernel_mode="subprocess"``: hard timeouts, crashes, and nothing left after close."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable

import pytest
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import Identity, identity, wait_gone, with_marker

from rlm_core.environments.base import Environment, Session
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.exceptions import SandboxCrashedError, SandboxError, SandboxRestartedError

StartEnv = Callable[..., Environment]
"""The ``start_env`` fixture (see ``conftest.py``)."""

pytestmark = pytest.mark.timeout(120)


def _processes(env: SubprocessEnvironment) -> list[Identity]:
    """The agent and its supervisor."""
    pids = [env.agent_pid, env.launcher.pid if env.launcher else None]
    found = [identity(pid) for pid in pids if pid]
    return [ident for ident in found if ident is not None]


def test_a_loop_is_interrupted_and_state_kept(start_env: StartEnv) -> None:
    env = start_env(kernel_mode="subprocess", cell_timeout=1.0)
    env.execute("kept = 41")
    result = env.execute("while True:\n    pass")
    assert result.error is not None and result.error.startswith("CellTimeout")
    assert "while True:" in result.stderr and "rlm_core" not in result.stderr
    assert env.execute("kept + 1").stdout == "42\n"


@pytest.mark.parametrize(
    "cell",
    [
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "while True:\n    pass",
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass",
    ],
    ids=["ignores-signals", "swallows-exceptions"],
)
def test_a_cell_that_will_not_stop_restarts_the_kernel(start_env: StartEnv, cell: str) -> None:
    env = start_env(kernel_mode="subprocess", cell_timeout=0.5, interrupt_grace=0.5)
    assert isinstance(env, SubprocessEnvironment)
    env.add_context("the context")
    env.execute("lost = 1")
    before = _processes(env)
    with pytest.raises(SandboxRestartedError, match="restarted"):
        env.execute(cell)
    assert wait_gone(before) == []
    # A fresh IPython kernel, the context loaded again, the variables gone.
    result = env.execute("print(context)\n%xmode Minimal\nlost")
    assert result.stdout.startswith("the context\n")
    assert result.stderr == "NameError: name 'lost' is not defined\n"


def test_a_crash_is_a_typed_error(start_env: StartEnv) -> None:
    env = start_env(kernel_mode="subprocess")
    with pytest.raises(SandboxCrashedError):
        env.execute("import os\nos._exit(3)")


def test_nothing_is_left_after_close(start_env: StartEnv) -> None:
    marker = f"rlm-ipython-{secrets.token_hex(4)}"
    env = start_env(kernel_mode="subprocess", prewarm=False)
    assert isinstance(env, SubprocessEnvironment)
    sleeper = f"{sys.executable} -c 'import time; time.sleep(300)' {marker}"
    env.execute(f"!(setsid {sleeper} >/dev/null 2>&1 &)")
    env.execute(f"import shlex, subprocess\nsubprocess.Popen(shlex.split({sleeper!r}))")
    private_dir = env.launcher.shared_dir() if env.launcher else None
    assert private_dir is not None and os.path.isdir(private_dir)
    started = _processes(env) + with_marker(marker)
    assert len(started) >= 4
    env.close()
    assert wait_gone(started) == []
    assert not os.path.exists(private_dir)


def test_a_namespace_the_agent_cannot_load_is_a_clear_start_error() -> None:
    """The agent's ``RLM_AGENT_REPL`` (what this environment sets) names an importable
    namespace; when it cannot be loaded the start fails with the agent's reason."""
    env = SubprocessEnvironment(env={"RLM_AGENT_REPL": "no_such_module_here:Namespace"})
    try:
        with pytest.raises(SandboxError, match=r"cannot make the REPL namespace.*no_such_module"):
            env.start(Session(subcalls=RecordingSubcalls()))
    finally:
        env.close()
