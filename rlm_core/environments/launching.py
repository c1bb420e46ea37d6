"""Starting the agent in any process-like object: secrets in, ready line out.

Every launcher that starts ``python -m rlm_core.agent`` as a process with pipes (a local
child, ``docker exec``, a provider's exec handle wrapped in file-like objects) does the
same three things, shared here: hand the agent its secrets on stdin, read its ready line
from stdout (keeping what came before it), and keep the tail of its stderr for error
messages.

The parent-death rule: on Linux, the kernel's parent-death signal follows the *thread*
that started a process, so a launcher must start local agents from a thread that lives as
long as the host (``SubprocessLauncher`` uses one long-lived spawner thread), and pass
``--die-with-parent PID`` (``0`` when a wrapper such as ``unshare`` sits in between: the
agent then watches whoever started it, and the wrapper is given a parent-death signal).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from rlm_core.agent import READY_PREFIX
from rlm_core.exceptions import SandboxError

_READY = re.compile(rf"^{READY_PREFIX}\b(?P<fields>.*)$")


class AgentProcessLike(Protocol):
    """What :func:`start_agent` needs of a process: text pipes and a return code."""

    stdin: IO[str] | None
    stdout: IO[str] | None

    def poll(self) -> int | None:
        """The exit status once it has ended, else ``None``."""
        ...


@dataclass(frozen=True)
class AgentReady:
    """The agent's ready line, parsed: ``RLM-AGENT-READY port=N pid=P ...``."""

    line: str
    port: int
    pid: int
    fields: dict[str, str] = field(default_factory=dict)
    preamble: tuple[str, ...] = ()
    """Lines the process printed before it (a shell's banner, warnings)."""


def parse_ready_line(line: str) -> AgentReady | None:
    """The fields of a ready line, or ``None`` when ``line`` is not one."""
    match = _READY.match(line.strip())
    if match is None:
        return None
    fields = dict(item.split("=", 1) for item in match.group("fields").split() if "=" in item)
    try:
        port, pid = int(fields.get("port", "0")), int(fields.get("pid", "0"))
    except ValueError:
        return None
    return AgentReady(line.strip(), port, pid, fields)


class StderrTail:
    """The last ``lines`` lines of an agent's stderr.

    ``stream`` is read on a daemon thread until it ends: a text stream, or any iterable of
    chunks, bytes or text, split anywhere (a provider SDK's output iterator). An SDK that
    delivers stderr through a callback passes :meth:`feed` instead. Bytes are decoded as
    UTF-8 (a character split between chunks survives); an endless line is cut to its last
    :data:`MAX_LINE` characters.

    ``ended`` says whether the process writing the stream has ended. Once it has, its last
    lines may still be in the pipe, unread: :meth:`text` then waits up to
    :data:`ENDED_WAIT` seconds for the stream to end, so an error about a process that
    exited says what it wrote last.
    """

    MAX_LINE = 2000
    """Characters kept of one line."""

    ENDED_WAIT = 2.0
    """Seconds :meth:`text` waits at most for the stream to end once its process has ended
    (all of them only when a process it left behind still holds the pipe open)."""

    def __init__(
        self,
        stream: Iterable[bytes | str] | None = None,
        lines: int = 40,
        *,
        ended: Callable[[], bool] | None = None,
    ) -> None:
        self._ended = ended
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if stream is not None:
            self._thread = threading.Thread(
                target=self._drain, args=(stream,), name="rlm-agent-stderr", daemon=True
            )
            self._thread.start()

    def _drain(self, stream: Iterable[bytes | str]) -> None:
        try:
            for chunk in stream:
                self.feed(chunk)
        except Exception:  # closed under us, or the sandbox is gone: what was read is kept
            pass

    def feed(self, chunk: bytes | str) -> None:
        """Add a chunk of the stream."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        with self._lock:
            *complete, partial = (self._partial + text).split("\n")
            self._partial = partial[-self.MAX_LINE :]
            self._lines.extend(line.rstrip("\r")[-self.MAX_LINE :] for line in complete)

    def text(self, wait: float = 0.0) -> str:
        """The lines kept so far (an unfinished last line included), after waiting up to
        ``wait`` seconds (at least :data:`ENDED_WAIT` once the process has ended) for the
        stream to end."""
        if self._thread is not None and self._ended is not None and self._ended():
            wait = max(wait, self.ENDED_WAIT)
        if wait > 0 and self._thread is not None:
            self._thread.join(wait)
        with self._lock:
            lines = [*self._lines, *([self._partial] if self._partial else [])]
        return "\n".join(lines[-(self._lines.maxlen or len(lines)) :])


PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The directory holding this ``rlm_core`` package."""


def with_package_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this ``rlm_core`` first on ``PYTHONPATH``, so a local agent imports the
    host's own copy (the public index has an unrelated ``rlm-core``)."""
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def process_status(process: subprocess.Popen[Any] | Any, wait: float = 0.0) -> int | None:
    """A local process's return code (``-N``: killed by signal N) once it has ended,
    waiting up to ``wait`` seconds; ``None`` while it runs. What
    :meth:`Launcher.exit_status <rlm_core.environments.launcher.Launcher.exit_status>` says
    for a launcher that started one."""
    try:
        return process.wait(timeout=wait) if wait > 0 else process.poll()
    except subprocess.TimeoutExpired:
        return None


def stop_agent_process(process: subprocess.Popen[Any] | Any) -> None:
    """Kill a local agent started with ``--die-with-parent``: its supervisor, the agent and
    everything its cells started, however they detached themselves (the supervisor adopted
    them), then its process group (all that can be found without ``/proc``); wait for it."""
    from rlm_core.agent.process_tree import kill_tree

    if process.poll() is None:
        kill_tree(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10.0)
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)


def _drain(stream: IO[str]) -> None:
    try:
        for _ in stream:
            pass
    except (OSError, ValueError):
        pass


def start_agent(
    process: AgentProcessLike,
    secrets_json: str | None,
    deadline: float,
    *,
    keep_stdin: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> AgentReady:
    """Hand ``secrets_json`` to the agent on its stdin (then close it, unless
    ``keep_stdin``), wait until ``deadline`` (a :func:`time.monotonic` time) for its ready
    line, and keep draining its stdout afterwards so a chatty cell never blocks on a full
    pipe. Lines before the ready line go to ``on_line`` and into the result's preamble.

    Raises :class:`SandboxError` (with what it printed, not its stderr: the caller has
    that) when the process ends or stays silent past the deadline.
    """
    if process.stdin is not None and secrets_json is not None:
        try:
            process.stdin.write(secrets_json + "\n")
            process.stdin.flush()
            if not keep_stdin:
                process.stdin.close()
        except (OSError, ValueError):
            pass  # it ended already: reading its stdout below says so
    stdout = process.stdout
    if stdout is None:
        raise SandboxError("the agent process has no stdout to read its ready line from")
    preamble: list[str] = []
    found: list[AgentReady] = []
    done = threading.Event()

    def read() -> None:
        try:
            for line in stdout:
                ready = parse_ready_line(line)
                if ready is not None:
                    found.append(ready)
                    break
                preamble.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        finally:
            done.set()
        if found:
            _drain(stdout)

    threading.Thread(target=read, name="rlm-agent-ready", daemon=True).start()
    allowed = max(0.0, deadline - time.monotonic())
    done.wait(allowed)
    if not found:
        status = process.poll()
        said = "\n".join(preamble[-20:])
        how = (
            "the agent did not start: it ended before its ready line"
            if status is not None or done.is_set()
            else f"the agent did not start within {allowed:.3g}s (no ready line)"
        )
        raise SandboxError(how + (f"; it printed:\n{said}" if said else ""))
    ready = found[0]
    return AgentReady(ready.line, ready.port, ready.pid, ready.fields, tuple(preamble))
