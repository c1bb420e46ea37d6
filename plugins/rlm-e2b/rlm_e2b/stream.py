"""The agent's command in an E2B sandbox as the core's
:class:`~rlm_core.environments.remote.SandboxExec`.

E2B runs the agent with ``commands.run(..., background=True, stdin=True)``. Its stdin takes
one ``SendInput`` call per :meth:`CommandStream.send` (the core's relay coalesces writes);
its stdout arrives decoded as UTF-8 text through the handle, so the agent frames it as
base64 lines (``framing="base64"``). A daemon thread follows the handle and pushes stdout
into the core's :class:`~rlm_core.environments.remote.PushExec`; stderr is kept as a short
tail for error messages. The command ends with its sandbox, which the launcher kills.
"""

from __future__ import annotations

import threading
from typing import Any

from rlm_core.environments.remote import PushExec

MAX_INPUT = 1 << 20
"""Bytes sent per ``SendInput`` call: its JSON body carries them as base64 (a third more),
well under the 4 MiB a Connect server reads by default."""


class CommandStream(PushExec):
    """The agent's running command: ``handle``, started by ``commands`` (an E2B sandbox's
    ``commands``)."""

    def __init__(self, commands: Any, handle: Any, request_timeout: float = 60.0) -> None:
        self._commands = commands
        self._handle = handle
        self._request_timeout = request_timeout
        super().__init__()
        self._ended = threading.Event()
        self.exit_code: int | None = None
        """The command's exit code once it has ended (``None`` before, or if the
        connection broke first)."""
        threading.Thread(target=self._follow, name="rlm-e2b-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        """The command's process id in the sandbox."""
        pid: int = self._handle.pid
        return pid

    def _follow(self) -> None:
        from e2b import CommandExitException

        reason = "the agent's command ended"
        try:
            result = self._handle.wait(on_stdout=self.stdout.push, on_stderr=self.stderr.feed)
            self.exit_code = result.exit_code
        except CommandExitException as exc:
            self.exit_code = exc.exit_code
        except Exception as exc:  # the SDK's stream broke: the sandbox is probably gone
            reason = f"the E2B command stream broke: {type(exc).__name__}: {exc}"
        if self.exit_code is not None:
            reason += f" (exit code {self.exit_code})"
        self._ended.set()
        self.stdout.end(reason)

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (a ``SendInput`` call per MiB)."""
        for start in range(0, len(data), MAX_INPUT):
            piece = data[start : start + MAX_INPUT]
            self._commands.send_stdin(self.pid, piece, request_timeout=self._request_timeout)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exit code, waiting up to ``wait`` seconds for the command to end."""
        self._ended.wait(wait)
        return self.exit_code
