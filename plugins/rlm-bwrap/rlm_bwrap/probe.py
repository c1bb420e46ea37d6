"""Whether bubblewrap can build a sandbox here: the binary exists and user namespaces work."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from rlm_bwrap.errors import BwrapUnavailableError

INSTALL_HINT = "install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap)"

USERNS_HINT = (
    "bubblewrap needs unprivileged user namespaces: check that the sysctl "
    "user.max_user_namespaces is above 0, kernel.unprivileged_userns_clone is 1 where the "
    "kernel has it, kernel.apparmor_restrict_unprivileged_userns is 0 (or an AppArmor "
    "profile allows bwrap), and that a container runtime's seccomp profile allows unshare"
)


def find_bwrap(name: str) -> str:
    """The absolute path of the ``bwrap`` binary ``name`` (a path, or a name looked up on
    ``PATH``); :class:`BwrapUnavailableError` when there is none."""
    found = shutil.which(name)
    if found is None:
        raise BwrapUnavailableError(f"the bubblewrap binary {name!r} was not found; {INSTALL_HINT}")
    return os.path.abspath(found)


@functools.lru_cache(maxsize=8)
def check_user_namespaces(bwrap: str) -> None:
    """Run an empty sandbox with ``bwrap``; :class:`BwrapUnavailableError` with bubblewrap's
    own words when it cannot make one. Checked once per binary and host process."""
    command = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--",
        shutil.which("true") or sys.executable,
        *([] if shutil.which("true") else ["-S", "-c", ""]),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BwrapUnavailableError(f"could not run {bwrap}: {exc}; {INSTALL_HINT}") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}"
        raise BwrapUnavailableError(f"{bwrap} could not create a sandbox: {said}; {USERNS_HINT}")
