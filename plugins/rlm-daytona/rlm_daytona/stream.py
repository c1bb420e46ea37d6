"""The agent's command in a Daytona sandbox as the core's
:class:`~rlm_core.environments.remote.SandboxExec`, over either of the toolbox's two ways
of running an interactive command.

* :class:`PtyExec` (``exec_mode="pty"``, the default): a PTY session, one bidirectional
  WebSocket. The PTY's login shell is told ``stty raw -echo`` first, which makes the
  terminal a clean byte pipe (no echo, no line editing, no CR/LF translation, no signal
  characters), and a marker the shell prints says when that took effect; only then is the
  agent ``exec``-ed and its stdin written, so the session's secrets are never echoed. The
  prompt and the echoed command line before the agent's ready line are the relay's
  preamble. Output arrives as binary messages (``framing="binary"``); input goes in
  messages of at most :data:`MAX_PTY_INPUT` bytes (the daemon's read limit is 64 KiB). A
  PTY merges stderr into stdout, so the agent's stderr goes to a file in the sandbox,
  read back when the agent ends (for error messages). :func:`open_pty` opens the PTY
  around a bug of the SDK's that fails a PTY whose ``connected`` message is 0.1 s late.
* :class:`SessionExec` (``exec_mode="session"``): a session command run asynchronously,
  its stdout and stderr demultiplexed from the logs WebSocket as text (so
  ``framing="base64"``), its stdin one ``send_session_command_input`` POST per write.

A daemon thread follows the output and pushes it into the core's
:class:`~rlm_core.environments.remote.PushExec` (the PTY's waits for at most
:data:`PTY_POLL` at a time, so that it ends when the PTY is closed). The command ends
with its sandbox, which the launcher deletes; :meth:`close` also closes the WebSocket,
whose reader threads are not daemon threads (the core ends every sandbox, so closes
these, before the interpreter waits for such threads at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shlex
import threading
import time
from typing import Any

from rlm_core.environments.remote import PushExec, status_from_exit_code
from rlm_core.exceptions import SandboxError

log = logging.getLogger(__name__)

MAX_PTY_INPUT = 32 * 1024
"""Bytes per PTY input message: under the daemon's 64 KiB read limit per message."""

MAX_SESSION_INPUT = 1 << 20
"""Characters per ``send_session_command_input`` call (base64 text)."""

PTY_POLL = 0.5
"""Seconds the PTY's follower waits for output before it looks again whether the PTY was
closed."""

RAW_MARKER = b"RLM-PTY-RAW"
"""What the PTY's shell prints once the terminal is raw (built by ``printf``, so the echo
of the command line does not contain it)."""


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


class PtyExec(PushExec):
    """The agent run by the login shell of a PTY session (``handle``: its ``PtyHandle``);
    ``stderr_path``: where the agent's stderr goes in the sandbox."""

    def __init__(self, sandbox: Any, handle: Any, stderr_path: str) -> None:
        super().__init__()
        self._sandbox = sandbox
        self._handle = handle
        self._stderr_path = stderr_path
        self._raw = threading.Event()
        self._ended = threading.Event()
        self._seen = bytearray()
        self._send_lock = threading.Lock()
        self._closing = False
        self.exit_code: int | None = None
        """The shell's (so the agent's) exit code once the PTY ended."""
        threading.Thread(target=self._follow, name="rlm-daytona-pty", daemon=True).start()

    @classmethod
    def start(
        cls, sandbox: Any, argv: list[str], name: str, env: dict[str, str], timeout: float
    ) -> PtyExec:
        """Open PTY session ``name``, make its terminal raw, then ``exec`` the agent."""
        handle = open_pty(sandbox.process, name, env, timeout)
        command = cls(sandbox, handle, f"/tmp/{name}.stderr")
        agent = shlex.join(argv) + " 2>" + shlex.quote(command._stderr_path)
        # One line, so no prompt comes between the marker and the agent's ready line;
        # exec: the shell becomes the agent (and if it cannot, the shell ends all the same).
        line = f"stty raw -echo && printf '%s-%s\\n' RLM-PTY RAW && exec {agent}; exit 127\n"
        try:
            handle.send_input(line.encode())
            if not command._raw.wait(timeout):
                raise SandboxError("the Daytona PTY's shell did not make its terminal raw in time")
        except BaseException:
            command.close()
            raise
        return command

    def _follow(self) -> None:
        reason = "the agent's PTY ended"
        handle = self._handle
        # wait() with a timeout, round and round, rather than iterating the handle: a thread
        # blocked in the WebSocket's receive() without a timeout is never woken when the
        # socket is closed on this side (httpx-ws), so close() could not end it.
        while not self._closing:
            result = handle.wait(on_data=self._take, timeout=PTY_POLL)
            if result.exit_code is not None or result.error or not handle.is_connected():
                break
        if handle.exit_code is None and handle.error and not self._closing:
            reason = f"the Daytona PTY stream broke: {handle.error}"
        self.exit_code = handle.exit_code
        if self.exit_code is not None:
            reason += f" (exit code {self.exit_code})"
        if not self._closing:  # the agent ended on its own: its sandbox is still there
            self._fetch_stderr()
        self._ended.set()
        self._raw.set()
        self.stdout.end(reason)

    def _take(self, chunk: bytes) -> None:
        if not self._raw.is_set():
            self._seen += chunk
            if RAW_MARKER in self._seen:
                self._raw.set()
        self.stdout.push(chunk)

    def _fetch_stderr(self) -> None:
        """Read the agent's stderr file back (the sandbox outlives the agent)."""
        with contextlib.suppress(Exception):  # the sandbox is gone: nothing more to learn
            self.stderr.feed(self._sandbox.fs.download_file(self._stderr_path, 10))

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the PTY (messages of at most :data:`MAX_PTY_INPUT` bytes)."""
        try:
            with self._send_lock:
                for start in range(0, len(data), MAX_PTY_INPUT):
                    self._handle.send_input(data[start : start + MAX_PTY_INPUT])
        except Exception:
            # An ended PTY refuses input: the end of its output says why, not this.
            if not self._ended.wait(5.0):
                raise

    def close(self) -> None:
        """End the iteration and close the WebSocket (the agent ends with its sandbox)."""
        self._closing = True
        try:
            self._handle.disconnect()
        finally:
            super().close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exit code once the PTY ended, waiting up to ``wait`` seconds."""
        self._ended.wait(wait)
        return None if self.exit_code is None else status_from_exit_code(self.exit_code)


def open_pty(process: Any, name: str, env: dict[str, str], timeout: float) -> Any:
    """``process.create_pty_session(id=name)``, once more under a new id (``name-1``, ...)
    each time the SDK gives up on a PTY whose ``connected`` message came late, for up to
    ``timeout`` seconds; each PTY it gave up on is killed.

    The SDK's ``PtyHandle.wait_for_connection`` means to wait 10 s for that message, in
    turns of 0.1 s, but it catches ``TimeoutError`` where httpx-ws raises ``queue.Empty``:
    a message that comes more than 0.1 s after the WebSocket opened fails the call (a
    ``DaytonaError`` with an empty message, caused by ``queue.Empty``). A busy host or
    network is enough for that."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        session = name if attempt == 0 else f"{name}-{attempt}"
        try:
            return process.create_pty_session(id=session, envs=env or None)
        except Exception as exc:
            if not isinstance(exc.__cause__, queue.Empty):
                raise
            with contextlib.suppress(Exception):  # it is ended with its sandbox all the same
                process.kill_pty_session(session)
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"the Daytona PTY never said it was connected within the SDK's 0.1 s "
                    f"({attempt + 1} tries in {timeout:g} s)"
                ) from exc
        log.debug("PTY %s was connected too late for the SDK; trying a new one", session)
        attempt += 1


class SessionExec(PushExec):
    """The agent run as command ``command_id`` of session ``session_id`` of ``sandbox``."""

    def __init__(self, sandbox: Any, session_id: str, command_id: str) -> None:
        super().__init__()
        self._process = sandbox.process
        self._session_id = session_id
        self._command_id = command_id
        self._ended = threading.Event()
        self._send_lock = threading.Lock()
        self.exit_code: int | None = None
        """The command's exit code once it ended."""
        threading.Thread(target=self._follow, name="rlm-daytona-logs", daemon=True).start()

    @classmethod
    def start(
        cls, sandbox: Any, argv: list[str], name: str, env: dict[str, str], timeout: float
    ) -> SessionExec:
        """Create session ``name`` and run the agent in it asynchronously."""
        from daytona import SessionExecuteRequest

        sandbox.process.create_session(name)
        line = shlex.join(argv)
        if env:
            line = "env " + shlex.join(f"{k}={v}" for k, v in env.items()) + " " + line
        request = SessionExecuteRequest(
            command=f"exec {line}", run_async=True, suppress_input_echo=True
        )
        response = sandbox.process.execute_session_command(name, request, timeout=int(timeout))
        return cls(sandbox, name, response.cmd_id)

    def _follow(self) -> None:
        reason = "the agent's session command ended"
        try:
            asyncio.run(
                self._process.get_session_command_logs_async(
                    self._session_id, self._command_id, self.stdout.push, self.stderr.feed
                )
            )
        except Exception as exc:
            reason = f"the Daytona logs stream broke: {type(exc).__name__}: {exc}"
        try:
            command = self._process.get_session_command(
                self._session_id, self._command_id, request_timeout=10
            )
            self.exit_code = command.exit_code
        except Exception:  # the sandbox is gone
            pass
        if self.exit_code is not None:
            reason += f" (exit code {self.exit_code})"
        self._ended.set()
        self.stdout.end(reason)

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` (base64 text) to the command's stdin, a POST per MiB."""
        text = data.decode("ascii")
        with self._send_lock:
            for start in range(0, len(text), MAX_SESSION_INPUT):
                self._process.send_session_command_input(
                    self._session_id, self._command_id, text[start : start + MAX_SESSION_INPUT]
                )

    def close(self) -> None:
        """End the iteration; delete the session, which ends the logs WebSocket."""
        try:
            if not self._ended.is_set():
                self._process.delete_session(self._session_id, request_timeout=10)
        except Exception:  # the sandbox is gone, and the stream with it
            pass
        finally:
            super().close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exit code once the command ended, waiting up to ``wait`` seconds."""
        self._ended.wait(wait)
        return None if self.exit_code is None else status_from_exit_code(self.exit_code)
