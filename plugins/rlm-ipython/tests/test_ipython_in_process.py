"""``kernel_mode="in_process"``: shells share the process without disturbing it."""

from __future__ import annotations

import builtins
import gc
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Callable

from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import wait_gone, with_marker
from rlm_ipython.environment import IPythonEnvironment

from rlm_core.environments.base import Environment, Session

StartEnv = Callable[..., Environment]
"""The ``start_env`` fixture (see ``conftest.py``)."""


def _process_state() -> dict[str, object]:
    return {
        "main": sys.modules["__main__"],
        "displayhook": getattr(sys.displayhook, "fallback", sys.displayhook),
        "excepthook": sys.excepthook,
        "builtins": dict(vars(builtins)),
        "ps1": getattr(sys, "ps1", None),
        "path": list(sys.path),
    }


def test_the_process_is_left_as_it_was() -> None:
    IPythonEnvironment().close()  # IPython's one-time set-up (its imports) done
    before = _process_state()
    env = IPythonEnvironment()
    env.start(Session(subcalls=RecordingSubcalls()))
    env.execute("import sys\n1/0")
    env.execute("'a value'")
    env.execute("exit")
    shell = weakref.ref(env.get_variable("get_ipython")())
    env.close()
    after = _process_state()
    assert after == before
    gc.collect()
    assert shell() is None  # nothing (an exit handler, a hook) keeps the shell alive


def test_each_environment_has_its_own_namespace(start_env: StartEnv) -> None:
    first, second = start_env(), start_env()
    first.execute("x = 'first'")
    second.execute("x = 'second'")
    assert first.execute("x").stdout == "'first'\n"
    assert second.execute("x").stdout == "'second'\n"


def test_cells_in_threads_at_once_show_their_own_values(start_env: StartEnv) -> None:
    envs = [start_env() for _ in range(4)]
    barrier = threading.Barrier(len(envs))
    outputs: dict[int, list[str]] = {}

    def run(index: int) -> None:
        barrier.wait()
        outputs[index] = [envs[index].execute(f"{index} * 1000 + {i}").stdout for i in range(50)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(envs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, shown in outputs.items():
        assert shown == [f"{index * 1000 + i}\n" for i in range(50)]
    for index, env in enumerate(envs):  # `_` is each shell's own last value
        assert env.execute("_").stdout == f"{index * 1000 + 49}\n"


def test_background_scripts_end_at_close() -> None:
    marker = f"rlm-ipython-bg-{secrets.token_hex(4)}"
    env = IPythonEnvironment()
    try:
        env.start(Session(subcalls=RecordingSubcalls()))
        sleeper = f"exec {sys.executable} -c 'import time; time.sleep(300)' {marker}"
        assert env.execute(f"%%script sh --bg\n{sleeper}").error is None
        deadline = time.monotonic() + 10
        while not with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = with_marker(marker)
        assert started
    finally:
        env.close()
    assert wait_gone(started) == []
