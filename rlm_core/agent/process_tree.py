"""Finding and killing every descendant of a process, on Linux (standard library only).

A cell can start processes that leave the agent's process group and session
(``start_new_session=True``, a double fork with ``setsid``), so killing a process group is
not enough. These helpers walk the process tree through ``/proc`` instead. For orphans to
stay findable, the root of the tree must be alive and a *child subreaper*
(:func:`become_subreaper`): an orphaned descendant is then adopted by the root rather than
by the system's init, and a later walk finds it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_MAX_SWEEPS = 200


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux); ``False`` elsewhere."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when the thread that started it
    ends (Linux); ``False`` elsewhere."""
    return _prctl(_PR_SET_PDEATHSIG, signum)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return data[data.rfind(b")") + 2 :].decode("ascii", "replace").split()


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (empty when it is gone)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found.extend(int(p) for p in f.read().split())
        except FileNotFoundError:  # a kernel without the children file: scan every process
            return _children_by_scan(pid)
        except OSError:
            continue
    return found


def _children_by_scan(parent: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and len(fields) > 1 and fields[1] == str(parent):
                found.append(int(name))
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the tree, parents before their children."""
    found: list[int] = []
    seen = {root}
    queue = [root]
    while queue:
        pid = queue.pop(0)
        for child in children(pid):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def kill_descendants(root: int) -> int:
    """SIGKILL every descendant of ``root`` until none is left running; return how many
    were signalled. ``root`` itself is left alone; it should be a living subreaper (or
    stopped) so that the orphans of killed processes are found by the next sweep."""
    killed = 0
    for _ in range(_MAX_SWEEPS):
        running = [pid for pid in descendants(root) if is_running(pid)]
        if not running:
            break
        for pid in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.001)  # let the killed ones exit, so their children are re-parented
    return killed


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and everything below it (descendants first, so that orphans are
    still adopted by ``root`` while the sweep runs)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGSTOP)  # it starts nothing new while its tree is swept
    kill_descendants(root)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(root, signal.SIGKILL)
