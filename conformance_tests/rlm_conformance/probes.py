"""What the suite looks at on the host: processes, temporary directories, servers a
sandbox must not reach, and files it must not read. Linux ``/proc`` based. Also what a
provider's own failure tests need: a host process to kill (:func:`host_script`) and a
bounded wait for what follows (:func:`wait_until`)."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

Identity = tuple[int, int]
"""A process as ``(pid, start time in clock ticks)``: a reused pid is another process."""


def identity(pid: int) -> Identity | None:
    """The identity of running process ``pid`` (``None`` when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return pid, int(fields[19])


def running(process: Identity) -> bool:
    """Whether that very process still runs."""
    return identity(process[0]) == process


def wait_gone(processes: Iterable[Identity], bound: float = 15.0) -> list[Identity]:
    """Wait up to ``bound`` seconds for the processes to end; return those still running."""
    deadline = time.monotonic() + bound
    left = list(processes)
    while True:
        left = [p for p in left if running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill(processes: Iterable[Identity]) -> None:
    """SIGKILL whichever of ``processes`` still runs (clean-up after a failed check)."""
    for process in processes:
        if running(process):
            with contextlib.suppress(OSError):
                os.kill(process[0], 9)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def with_marker(marker: str) -> list[Identity]:
    """Running processes whose command line contains ``marker``."""
    found = []
    for pid in _pids():
        if marker in _cmdline(pid):
            ident = identity(pid)
            if ident is not None:
                found.append(ident)
    return found


def host_identity(process: Identity) -> Identity:
    """``process`` as this machine sees it. A process in a PID namespace of its own (a
    sandbox's) knows itself by its pid there; this finds the process whose innermost pid
    (``NSpid`` in ``/proc/PID/status``) and start time match. ``process`` as it is when it
    is this machine's already, or when no process matches (a sandbox on another machine)."""
    if running(process):
        return process
    pid, start = process
    for candidate in _pids():
        try:
            with open(f"/proc/{candidate}/status", encoding="utf-8") as f:
                nspids = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspids) > 1 and nspids[-1] == str(pid) and identity(candidate) == (candidate, start):
            return candidate, start
    return process


def describe(process: Identity) -> str:
    """``pid 123 (python -c ...)`` for messages."""
    return f"pid {process[0]} ({_cmdline(process[0])[:120].strip() or '?'})"


# -- temporary directories ---------------------------------------------------------------


def host_tmpdir() -> str:
    """A new private directory with a short path, for the ``TMPDIR`` of a host process a
    test will kill: it is left there what the killed host cannot remove (its agents'
    directories, its relay's socket directory, which a long ``TMPDIR`` would move to
    ``/tmp``). The test removes it afterwards."""
    return tempfile.mkdtemp(prefix="rlm-h-", dir="/tmp" if os.path.isdir("/tmp") else None)


@contextlib.contextmanager
def host_script(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run the Python ``script`` (with ``args``) as a host process a test may kill: in a
    session of its own, stdin empty, stdout and stderr text pipes, and ``TMPDIR`` a new
    :func:`host_tmpdir`. Afterwards its process group is killed (whatever of it still
    runs), its pipes closed, and the directory removed with what a killed host left."""
    tmp = host_tmpdir()
    try:
        host = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "TMPDIR": tmp},
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        yield host
    finally:
        with contextlib.suppress(OSError):
            os.killpg(host.pid, signal.SIGKILL)
        host.wait(30)
        for pipe in (host.stdout, host.stderr):
            if pipe is not None:
                pipe.close()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_until(condition: Callable[[], object], bound: float, every: float = 0.1) -> bool:
    """Ask ``condition`` every ``every`` seconds for up to ``bound`` seconds, and once
    more at the end: whether it came true."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


def _unix_socket_paths() -> set[str]:
    paths = set()
    with contextlib.suppress(OSError), open("/proc/net/unix", encoding="utf-8") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("/"):
                paths.add(parts[7])
    return paths


def _open_paths() -> tuple[set[str], list[str]]:
    opened: set[str] = set()
    cmdlines = []
    for pid in _pids():
        cmdlines.append(_cmdline(pid))
        with contextlib.suppress(OSError):
            opened.add(os.readlink(f"/proc/{pid}/cwd"))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    opened.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return opened, cmdlines


class TempDirWatch:
    """Points this process's temporary files at a private directory, and reports what
    is left in it that no running process uses (a listening socket inside it, an open
    file, a working directory, a mention on a command line): what an environment left
    behind. What a live process still uses belongs to that process (a pre-started agent
    waiting for the next environment), whose own ending is checked separately."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="rlm-conformance-")
        self._saved = tempfile.tempdir

    def __enter__(self) -> TempDirWatch:
        tempfile.tempdir = self.path
        return self

    def __exit__(self, *exc: object) -> None:
        tempfile.tempdir = self._saved

    def leftovers(self, settle: float = 5.0) -> list[str]:
        """Entries nobody uses, after waiting up to ``settle`` seconds for them to go."""
        deadline = time.monotonic() + settle
        while True:
            left = self._unused()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def _unused(self) -> list[str]:
        entries = sorted(os.listdir(self.path))
        if not entries:
            return []
        sockets = _unix_socket_paths()
        opened, cmdlines = _open_paths()
        unused = []
        for entry in entries:
            full = os.path.join(self.path, entry)
            inside = full + os.sep
            used = any(p == full or p.startswith(inside) for p in sockets | opened) or any(
                full in line for line in cmdlines
            )
            if not used:
                unused.append(entry)
        return unused

    def remove(self) -> None:
        """Delete the private directory once nothing in it is in use: now when it is
        empty, else when this process exits (a pre-started agent's socket stays usable)."""
        try:
            os.rmdir(self.path)
        except OSError:
            _remove_at_exit.append(self.path)


_remove_at_exit: list[str] = []


@atexit.register
def _remove_private_dirs() -> None:
    for path in _remove_at_exit:
        shutil.rmtree(path, ignore_errors=True)


# -- things a sandbox must not reach -----------------------------------------------------


@dataclass
class HostFile:
    """A file on the host with a secret line in it."""

    path: str
    secret: str


@contextlib.contextmanager
def host_file() -> Iterator[HostFile]:
    """A readable file in a fresh host directory, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="rlm-conformance-host-")
    secret = "host-secret-" + secrets.token_hex(8)
    path = os.path.join(folder, "secret.txt")
    Path(path).write_text(secret + "\n", encoding="utf-8")
    os.chmod(folder, 0o755)
    os.chmod(path, 0o644)
    try:
        yield HostFile(path, secret)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Server:
    """Accepts connections on a listening socket and counts them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with contextlib.suppress(OSError):
                conn.sendall(b"host-server-hello\n")
                conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def loopback_server() -> Iterator[tuple[str, int, _Server]]:
    """A TCP server on ``127.0.0.1`` that answers ``host-server-hello``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = _Server(sock)
    try:
        yield "127.0.0.1", sock.getsockname()[1], server
    finally:
        server.close()


@contextlib.contextmanager
def unix_server() -> Iterator[tuple[str, _Server]]:
    """A Unix socket server in a fresh host directory (world-accessible, so that only
    isolation can keep a sandbox from it)."""
    folder = tempfile.mkdtemp(prefix="rlm-conformance-sock-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "host.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    sock.listen(16)
    server = _Server(sock)
    try:
        yield path, server
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def host_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A sleeping host process whose command line carries a unique marker."""
    marker = "rlm-conformance-host-" + secrets.token_hex(6)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time, sys; time.sleep(600)", marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield marker, process
    finally:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)


@contextlib.contextmanager
def host_private_file() -> Iterator[HostFile]:
    """A file only its owner may read (mode 0600; owned by root when the suite runs as
    root) in a fresh world-searchable host directory, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="rlm-conformance-private-")
    secret = "host-private-" + secrets.token_hex(8)
    path = os.path.join(folder, "private.txt")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    os.chmod(folder, 0o755)
    try:
        yield HostFile(path, secret)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FileIdentity = tuple[int, int, int]
"""A file as ``(device, inode, modification time in ns)``: the same triple means the
same file, a copy (another machine's, another image's) has another."""


def file_identity(path: str) -> FileIdentity | None:
    """The identity of the host's file at ``path`` (``None`` when there is none)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_mtime_ns


def remove_planted(paths: Iterable[str], marker: str) -> list[str]:
    """Remove the host files among ``paths`` that hold ``marker`` (what a sandbox wrote
    where it must not); return them."""
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            if marker in Path(path).read_text(encoding="utf-8", errors="replace"):
                found.append(path)
                os.remove(path)
    return found
