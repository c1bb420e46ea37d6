"""The ``stdio`` carrier's byte stream over an E2B command handle.

E2B runs the agent with ``commands.run(..., background=True, stdin=True)``. Its stdin takes
one ``SendInput`` call per :meth:`CommandStream.send` (the core's relay coalesces writes);
its stdout arrives decoded as UTF-8 text through the handle, so the agent frames it as
base64 lines (``framing="base64"``). A daemon thread follows the handle and pushes stdout
into a :class:`~rlm_core.bridge.carriers.stdio.PushStream`; stderr is kept as a short tail
for error messages.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from rlm_core.bridge.carriers.stdio import PushStream

STDERR_LINES = 40
"""Lines of the agent's stderr kept for error messages."""

MAX_INPUT = 1 << 20
"""Bytes sent per ``SendInput`` call: its JSON body carries them as base64 (a third more),
well under the 4 MiB a Connect server reads by default."""


class CommandStream:
    """A :class:`~rlm_core.bridge.carriers.stdio.ByteStream` over ``handle``, a running
    command of ``commands`` (an E2B sandbox's ``commands``)."""

    def __init__(self, commands: Any, handle: Any, request_timeout: float = 60.0) -> None:
        self._commands = commands
        self._handle = handle
        self._request_timeout = request_timeout
        self._push = PushStream(self._send, close=self._kill)
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._partial = ""
        self._ended = threading.Event()
        self._killable = True
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
            result = self._handle.wait(on_stdout=self._push.push, on_stderr=self._on_stderr)
            self.exit_code = result.exit_code
        except CommandExitException as exc:
            self.exit_code = exc.exit_code
        except Exception as exc:  # the SDK's stream broke: the sandbox is probably gone
            reason = f"the E2B command stream broke: {type(exc).__name__}: {exc}"
        if self.exit_code is not None:
            reason += f" (exit code {self.exit_code})"
        self._ended.set()
        self._push.end(reason)

    def _on_stderr(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()[-2000:]
        self._stderr.extend(line[-2000:] for line in lines)

    def _send(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_INPUT):
            piece = data[start : start + MAX_INPUT]
            self._commands.send_stdin(self.pid, piece, request_timeout=self._request_timeout)

    def _kill(self) -> None:
        if not self._killable:
            return
        with contextlib.suppress(Exception):  # already gone, with its sandbox
            self._handle.kill()

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (a ``SendInput`` call per MiB)."""
        self._push.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """The agent's stdout, as the SDK decoded it, until the command ends."""
        return iter(self._push)

    def close(self) -> None:
        """Kill the command; the iteration ends."""
        self._push.close()

    def disown(self) -> None:
        """The sandbox is being stopped: :meth:`close` no longer kills the command itself."""
        self._killable = False

    def wait(self, timeout: float) -> int | None:
        """The exit code, waiting up to ``timeout`` seconds for the command to end."""
        self._ended.wait(timeout)
        return self.exit_code

    def stderr_tail(self) -> str:
        """The last lines of the agent's stderr."""
        lines = [*self._stderr, *([self._partial] if self._partial else [])]
        return "\n".join(lines)
