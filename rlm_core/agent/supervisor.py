"""The agent's supervisor: a small process between the launcher and the agent (Linux).

``python -m rlm_core.agent --die-with-parent PPID`` forks before anything else is loaded.
The child goes on to be the agent; the parent stays behind as its supervisor, a
single-threaded process that runs no cell code, so nothing a cell does (ignoring signals,
holding the GIL, detaching children with ``setsid``) can keep it from acting:

* it is a *child subreaper*: every process a cell starts that outlives its own parent is
  adopted by the supervisor, however it detached itself, so the whole tree stays findable;
* when the launcher ``PPID`` dies (parent-death signal, checked again twice a second; ``0``
  means the process that started the agent, e.g. a wrapper such as ``unshare``), or on
  SIGTERM, SIGINT or SIGHUP, it kills the agent and every descendant and exits;
* when the agent ends, it kills whatever the agent left running, then exits the way the
  agent did (same exit code, or the same signal), so the launcher sees the agent's status;
* either way it removes the agent's private directory (``--shared-dir``) on the way out.

The agent gets a parent-death signal (SIGKILL) from the supervisor, so it never outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import NoReturn

from rlm_core.agent.process_tree import (
    become_subreaper,
    kill_descendants,
    set_parent_death_signal,
)

_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_POLL_SECONDS = 0.5


def supervise(launcher_pid: int, shared_dir: str | None) -> None:
    """Fork the agent off and supervise it; returns only in the agent (the child).

    On platforms without parent-death signals and subreapers it returns at once and the
    process is its own agent, as before.
    """
    if not sys.platform.startswith("linux"):
        return
    if launcher_pid == 0:  # "whoever started me": a wrapper (unshare, bwrap) sits between
        launcher_pid = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    become_subreaper()
    set_parent_death_signal(signal.SIGTERM)
    supervisor = os.getpid()
    if os.getppid() != launcher_pid:  # the launcher died before the signal was armed
        _leave(shared_dir, None)
    agent = os.fork()
    if agent == 0:
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != supervisor:
            os._exit(1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
        return
    _watch(agent, launcher_pid, shared_dir)


def _watch(agent: int, launcher_pid: int, shared_dir: str | None) -> NoReturn:
    status: int | None = None
    while True:
        info = signal.sigtimedwait(_WATCHED, _POLL_SECONDS)
        if info is None:
            if os.getppid() != launcher_pid:
                break  # the launcher is gone
            continue
        if info.si_signo != signal.SIGCHLD:
            break
        status = _reap(agent)
        if status is not None:
            break
    _leave(shared_dir, status)


def _reap(agent: int) -> int | None:
    """Reap every ended child; the agent's exit status once it is among them."""
    status = None
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == agent:
            status = os.waitstatus_to_exitcode(raw)


def _leave(shared_dir: str | None, status: int | None) -> NoReturn:
    """Kill everything below, remove the private directory and exit as the agent did."""
    kill_descendants(os.getpid())
    while True:  # reap what the sweep killed
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    if shared_dir:
        import shutil

        shutil.rmtree(shared_dir, ignore_errors=True)
    if status is not None and status < 0:
        signum = -status
        import resource

        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the agent's crash, not ours
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(signum, signal.SIG_DFL)
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
            os.kill(os.getpid(), signum)
    os._exit(status if status is not None and status >= 0 else 0)
