"""The agent's exec in a Modal sandbox (``sandbox.exec(..., text=False)``) as the core's
:class:`~rlm_core.environments.remote.SandboxExec`.

Modal delivers an exec's stdout as a server stream of raw bytes (``TaskExecStdioRead``)
and takes its stdin as one unary ``TaskExecStdinWrite`` per ``drain()``.
"""

from __future__ import annotations

import time
from typing import Any

from rlm_core.environments.remote import PushExec, pump, status_from_exit_code

MAX_WRITE = 4 * 1024 * 1024
"""Most bytes sent in one stdin write. The SDK refuses more than 16 MiB buffered per
``drain()``; the relay already batches up to 4 MiB per send, so this only splits a larger
send and keeps each RPC well under the SDK's limit."""


class ExecStream(PushExec):
    """A Modal ``ContainerProcess`` started with ``text=False``: stdout pumped into the
    core's push stream, stderr kept as a tail."""

    def __init__(self, process: Any) -> None:
        self._process = process
        super().__init__(process.stderr, stderr_wait=0.5)
        pump(process.stdout, self.stdout, "the Modal exec's stdout")

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (one RPC per :data:`MAX_WRITE` bytes)."""
        stdin = self._process.stdin
        for start in range(0, len(data), MAX_WRITE):
            stdin.write(data[start : start + MAX_WRITE])
            stdin.drain()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exec's exit status (Modal's ``128 + N`` for signal N becomes ``-N``)."""
        deadline = time.monotonic() + wait
        while True:
            code = self._process.poll()
            if code is not None:
                return status_from_exit_code(int(code))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
