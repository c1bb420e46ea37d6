"""The agent's exec in a Modal sandbox (``sandbox.exec(..., text=False)``) as the core's
:class:`~rlm_core.environments.remote.SandboxExec`.

Modal delivers an exec's stdout as a server stream of raw bytes (``TaskExecStdioRead``)
and takes its stdin as one unary ``TaskExecStdinWrite`` per ``drain()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from rlm_core.environments.launching import StderrTail
from rlm_core.environments.remote import PushStream, pump, status_from_exit_code

MAX_WRITE = 4 * 1024 * 1024
"""Most bytes sent in one stdin write. The SDK refuses more than 16 MiB buffered per
``drain()``; the relay already batches up to 4 MiB per send, so this only splits a larger
send and keeps each RPC well under the SDK's limit."""


class ExecStream:
    """A Modal ``ContainerProcess`` started with ``text=False``: stdout pumped into a
    :class:`~rlm_core.bridge.carriers.stdio.PushStream`, stderr kept as a tail."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self._push = PushStream(self._write)
        self._stderr = StderrTail(process.stderr)
        pump(process.stdout, self._push, "the Modal exec's stdout")

    def _write(self, data: bytes) -> None:
        stdin = self._process.stdin
        for start in range(0, len(data), MAX_WRITE):
            stdin.write(data[start : start + MAX_WRITE])
            stdin.drain()

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (one RPC per :data:`MAX_WRITE` bytes)."""
        self._push.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """The agent's stdout, chunk by chunk, until it ends or :meth:`close`."""
        return iter(self._push)

    def close(self) -> None:
        """End the iteration now (the sandbox itself is terminated by the launcher)."""
        self._push.close()

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

    def stderr_tail(self) -> str:
        """The last lines of the exec's stderr (waiting briefly for it to end)."""
        return self._stderr.text(wait=0.5)
