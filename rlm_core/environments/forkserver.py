"""The host's end of the agent fork server (:mod:`rlm_core.agent.forkserver`).

Starting ``python -m rlm_core.agent`` costs about 100 ms, nearly all of it importing gRPC
and protobuf. A :class:`ForkServer` is one interpreter that has done those imports; each
agent is forked from it in a few milliseconds and then behaves exactly like a freshly
started one (its own session, pipes, private directory and limits). :class:`ForkedProcess`
gives the host the part of :class:`subprocess.Popen` it uses (``pid``, the three pipes,
``poll``, ``wait``, ``kill``), with exit statuses reported by the fork server.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from typing import IO, Any

from rlm_core.agent.forkserver import MAX_MESSAGE, send
from rlm_core.agent.process_tree import kill_tree
from rlm_core.environments.launching import StderrTail

UNKNOWN_EXIT = -int(signal.SIGKILL)
"""Return code given to a forked agent whose fork server died before reporting its end."""


STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_", "LC_")
STARTUP_NAMES = frozenset({"LANG", "TZ", "HOME"})


def startup_environment(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` an interpreter reads as it starts (``PYTHONPATH``, locale,
    ``LD_*``, malloc settings, ``HOME`` for the user site directory): agents forked from one
    fork server share them, so they choose the fork server. The rest is set in each forked
    agent."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES) or k in STARTUP_NAMES}


@functools.cache
def die_with_starting_thread() -> tuple[str, ...]:
    """A command prefix that gives a wrapper (``unshare``, ``bwrap``) a parent-death
    signal, so it dies with the thread that started it: ``setpriv --pdeathsig KILL --``
    where util-linux has it (Linux), else nothing (the agent under the wrapper still exits
    once the host's heartbeats stop). Not a ``preexec_fn``: that would make ``subprocess``
    fork where it can otherwise spawn, and fork gRPC's state with it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    guard = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        probe = subprocess.run([*guard, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return guard if probe.returncode == 0 else ()


class ForkServerError(RuntimeError):
    """The fork server could not start an agent (the caller starts one the usual way)."""


class ForkedProcess:
    """An agent forked by a :class:`ForkServer`, with ``Popen``'s interface as the host uses
    it."""

    def __init__(self, pid: int, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.stdout: IO[str] | None = stdout
        self.stderr: IO[str] | None = stderr
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        """The return code once the process has ended, else ``None``."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"agent {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """Send SIGKILL (nothing happens once it has ended)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """One fork server process for agents started with one interpreter and environment.

    Must be created from a thread that lives as long as the host (the server's
    parent-death signal follows the thread that started it).
    """

    def __init__(
        self, python: str, env: dict[str, str], cwd: str, prefix: tuple[str, ...] = ()
    ) -> None:
        # It runs in a private directory made under ``cwd``: ``python -m`` puts the working
        # directory first on ``sys.path``, so a shared one (``/tmp``) would let anyone plant
        # modules for it. It removes the directory when its parent-death signal ends it.
        self.dir = tempfile.mkdtemp(prefix="rlm-forkserver-", dir=cwd)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):  # room for a request carrying a large environment
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * MAX_MESSAGE)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * MAX_MESSAGE)
        try:
            command = [python, "-m", "rlm_core.agent", "--fork-server", str(theirs.fileno())]
            # Under a wrapper (``prefix``), the server watches whoever started it (0) and
            # the wrapper dies with the thread that started it.
            watched = "0" if prefix else str(os.getpid())
            guard = die_with_starting_thread() if prefix else ()
            self.process = subprocess.Popen(
                [*guard, *prefix, *command, "--die-with-parent", watched, "--shared-dir", self.dir],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                encoding="utf-8",
                errors="replace",
                env=env,
                cwd=self.dir,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self._control = ours
        self._lock = threading.Lock()  # one spawn request at a time
        self._request_ids = itertools.count(1)
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._children_lock = threading.Lock()
        self._gone = False  # its end was noticed: no exit will be reported any more
        self._alive = True
        self.stderr_tail = StderrTail(self.process.stderr, lines=20)
        threading.Thread(target=self._read, name="rlm-forkserver-reader", daemon=True).start()

    @property
    def alive(self) -> bool:
        """Whether the server can still fork agents."""
        return self._alive and self.process.poll() is None

    @property
    def busy(self) -> bool:
        """Whether agents it forked are still running (stopping it would end them)."""
        with self._children_lock:
            return bool(self._children)

    def spawn(
        self, argv: list[str], cwd: str, env: dict[str, str], timeout: float
    ) -> ForkedProcess:
        """Fork an agent running ``python -m rlm_core.agent *argv`` in ``cwd`` with the
        environment ``env`` (its variables read at interpreter start-up must be the fork
        server's: see :func:`startup_environment`)."""
        pipes = [os.pipe() for _ in range(3)]
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        try:
            with self._lock:
                if not self.alive:
                    raise ForkServerError(f"the fork server is gone: {self.diagnostics()}")
                request_id = next(self._request_ids)
                request = {"id": request_id, "argv": argv, "cwd": cwd, "env": env}
                send(self._control, request, theirs)
                while True:
                    try:
                        reply = self._replies.get(timeout=timeout)
                    except queue.Empty:
                        self._alive = False  # the caller stops it
                        raise ForkServerError("the fork server did not answer") from None
                    # Skip a late answer to a request given up on (interrupted): its agent
                    # ends by itself, its pipes being closed. No id: the server is gone.
                    if reply.get("id") in (request_id, None):
                        break
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if "pid" not in reply:
            for fd in ours:
                os.close(fd)
            raise ForkServerError(str(reply.get("error") or reply))
        child = ForkedProcess(
            int(reply["pid"]),
            open(ours[0], "w", encoding="utf-8"),  # noqa: SIM115  (owned by the process)
            # A cell may write any bytes to fd 1 and 2.
            open(ours[1], encoding="utf-8", errors="replace"),  # noqa: SIM115
            open(ours[2], encoding="utf-8", errors="replace"),  # noqa: SIM115
        )
        with self._children_lock:
            early = self._early_exits.pop(child.pid, None)
            if early is None and self._gone:  # it died as it answered: as in _read
                child.kill()
                early = UNKNOWN_EXIT
            if early is None:
                self._children[child.pid] = child
        if early is not None:
            child._set_exit(early)
        return child

    def diagnostics(self) -> str:
        """The server's last stderr lines."""
        return self.stderr_tail.text()

    def stop(self) -> None:
        """Close the control socket: the server exits, and the agents it forked that are
        still running get their parent-death signal."""
        self._alive = False
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- background threads ------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                data = self._control.recv(MAX_MESSAGE)
                if not data:
                    break
                message = json.loads(data)
                if "exited" in message:
                    self._exited(int(message["exited"]), int(message["code"]))
                else:
                    self._replies.put(message)
        except (OSError, ValueError):
            pass
        self._alive = False
        self._replies.put({"error": f"the fork server is gone: {self.diagnostics()}"})
        with self._children_lock:
            self._gone = True
            orphans, self._children = list(self._children.values()), {}
        for child in orphans:  # the status is lost; end them and what their cells started
            kill_tree(child.pid)
            child._set_exit(UNKNOWN_EXIT)

    def _exited(self, pid: int, code: int) -> None:
        with self._children_lock:
            child = self._children.pop(pid, None)
            if child is None:  # ended before spawn() registered it
                self._early_exits[pid] = code
        if child is not None:
            child._set_exit(code)
