"""``subprocess``: the agent in a child Python process, reached over a Unix socket.

Cells run in a separate interpreter, so a cell can be interrupted after a timeout, a crash
(``os._exit``, a segfault) is reported instead of taking the host down, and an optional
memory limit applies to the child only. The child dies with its host: it is started with
a parent-death signal (Linux), and the agent also exits when the host's heartbeats stop.
It is process isolation, not a security sandbox: the child runs as the same user.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlm_core.bridge.client import Endpoint
from rlm_core.environments.agent import AgentEnvironment, AgentSecrets, Launcher
from rlm_core.exceptions import SandboxError

_PR_SET_PDEATHSIG = 1
_READY_PREFIX = "RLM-AGENT-READY"

# Children are forked from one long-lived thread: Linux sends the parent-death signal when
# the *thread* that forked the child exits, so forking from short-lived worker threads
# would kill agents early.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlm-agent-spawner")


def _child_setup(memory_limit_bytes: int | None) -> None:  # runs in the child after fork
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if memory_limit_bytes is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


class SubprocessLauncher(Launcher):
    """Starts ``python -m rlm_core.agent`` as a child process on a private Unix socket."""

    def __init__(
        self,
        python: str | None = None,
        memory_limit_mb: int | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.python = python or sys.executable
        self.memory_limit_mb = memory_limit_mb
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[str] | None = None
        self._dir: str | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RLM_AGENT_TOKEN"}
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        if self.memory_limit_mb:
            # glibc reserves 64 MB of address space per malloc arena (up to 8 per CPU, one
            # per busy thread); under an address-space limit those reservations, not the
            # cell's data, would use up the limit. Two arenas keep it for the cell.
            env["MALLOC_ARENA_MAX"] = "2"
        env.update(self.extra_env)
        return env

    def launch(self, secrets: AgentSecrets, heartbeat_timeout: float) -> Endpoint:
        """Start the child, hand it the secrets on stdin and wait for its ready line."""
        self._dir = tempfile.mkdtemp(prefix="rlm-agent-")
        os.chmod(self._dir, 0o700)
        socket_path = os.path.join(self._dir, "agent.sock")
        command = [
            self.python,
            "-m",
            "rlm_core.agent",
            "--listen",
            f"unix:{socket_path}",
            "--secrets-stdin",
            "--heartbeat-timeout",
            str(heartbeat_timeout),
        ]
        limit = self.memory_limit_mb * 1024 * 1024 if self.memory_limit_mb else None
        self.process = _spawner.submit(
            subprocess.Popen,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._environment(),
            cwd=self._dir,
            start_new_session=True,
            preexec_fn=lambda: _child_setup(limit),
        ).result()
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            process.stdin.write(secrets.to_json() + "\n")
            process.stdin.close()
        except OSError as exc:
            raise SandboxError(f"the agent process exited at once: {self.diagnostics()}") from exc
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(self.ready_timeout)
        if not ready or not ready[0].startswith(_READY_PREFIX):
            status = process.poll()
            raise SandboxError(
                f"the agent did not start (exit status {status}): {self.diagnostics()}"
            )
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return Endpoint(target=f"unix:{socket_path}", token=secrets.token)

    def _drain_stderr(self) -> None:
        process = self.process
        if process is None or process.stderr is None:
            return
        for line in process.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def _drain_stdout(self) -> None:
        process = self.process
        if process is None or process.stdout is None:
            return
        for _ in process.stdout:
            pass

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The child's return code (``-N`` for signal N) once it has exited."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=wait) if wait > 0 else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def diagnostics(self) -> str:
        """The agent's last stderr lines."""
        return "\n".join(self._stderr_tail)

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return None if self.process is None else self.process.pid

    def terminate(self) -> None:
        """Stop the child (TERM, then KILL after 2 s) and remove its socket directory."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class SubprocessEnvironment(AgentEnvironment):
    """Cells run in a child Python process; see the module docstring.

    ``environment_kwargs`` beyond :class:`AgentEnvironment`'s: ``python`` (interpreter,
    default this one), ``memory_limit_mb`` (address-space limit of the child: the agent
    itself, interpreter, gRPC and thread stacks, takes about 250 MB of it, so add what the
    cells need on top) and ``env`` (extra environment variables).
    """

    name = "subprocess"

    def __init__(
        self,
        python: str | None = None,
        memory_limit_mb: int | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.python = python
        self.memory_limit_mb = memory_limit_mb
        self.env = env
        self.launcher: SubprocessLauncher | None = None

    def make_launcher(self) -> Launcher:
        """A :class:`SubprocessLauncher` with this environment's settings."""
        self.launcher = SubprocessLauncher(
            self.python, self.memory_limit_mb, self.env, ready_timeout=self.startup_timeout
        )
        return self.launcher

    @property
    def agent_pid(self) -> int | None:
        """The current agent process id (changes after a restart)."""
        return None if self.launcher is None else self.launcher.pid
