"""Nothing is left running after a forward pass, an exception in the program, or a crash.

Each environment runs the scenarios of ``dspy_leftover_child.py`` in a process of its own,
with a ``TMPDIR`` of its own, so every agent process and ``rlm-*`` directory found belongs to
that run. ``subprocess`` runs with ``prewarm=False``: with the default ``prewarm=True``
rlm-core keeps a fork server and one spare agent for the whole host process (shared by every
environment and stopped when the host exits), which the last test here checks separately.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest
import rlm_dspy
from dspy_doubles import agent_descendants, alive, cmdline, scripted_root_lm

pytestmark = pytest.mark.timeout(120)

CHILD = Path(__file__).with_name("dspy_leftover_child.py")


@pytest.fixture
def short_tmpdir() -> Iterator[str]:
    """A new directory with a short path (agents put Unix sockets in it)."""
    path = tempfile.mkdtemp(prefix="dspy-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("environment", "settings"),
    [
        ("local", {}),
        ("subprocess", {"prewarm": False}),
        ("loopback", {"carrier": "stdio"}),
    ],
    ids=["local", "subprocess", "loopback-stdio"],
)
def test_nothing_is_left_running(
    environment: str, settings: dict[str, Any], short_tmpdir: str
) -> None:
    paths = [str(Path(__file__).parent), *sys.path]
    env = {**os.environ, "TMPDIR": short_tmpdir, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, str(CHILD), environment, json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["forward"]["outcome"] == "returned 'A'"
    assert report["exception"]["outcome"].startswith("raised LMUnexpectedError")
    if environment != "local":
        assert report["crash"]["outcome"].startswith("raised CodeInterpreterError")
        assert "died" in report["crash"]["outcome"]
    for scenario in report.values():
        assert scenario["agents"] == {}, scenario
        assert scenario["dirs"] == [], scenario
    assert os.listdir(short_tmpdir) == []


def test_with_prewarm_the_interpreters_own_processes_end() -> None:
    before = set(agent_descendants())  # other tests' agents in this process are theirs
    made: list[rlm_dspy.RLMCoreInterpreter] = []
    factory = rlm_dspy.interpreter_factory("subprocess")

    def recording() -> rlm_dspy.RLMCoreInterpreter:
        made.append(factory())
        return made[-1]

    steps = [("Report.", "import os\nSUBMIT(answer=str(os.getpid()))")]
    rlm = dspy.RLM("question -> answer", interpreter_factory=recording)
    with dspy.context(lm=scripted_root_lm(steps)):
        agent = int(rlm(question="?").answer)
    environment: Any = made[0].environment
    supervisor = environment.launcher.pid
    assert agent != os.getpid() and supervisor is not None
    assert not alive(agent) and not alive(supervisor)
    # What remains is rlm-core's pool (a fork server and a spare it forked), nothing else.
    for pid in set(agent_descendants()) - before:
        assert "--fork-server" in cmdline(pid)
