"""The agent's live process in a Prime sandbox as the core's
:class:`~rlm_core.environments.remote.SandboxExec`.

``AsyncSandboxClient.open_process`` is async only: the process lives on the launcher's
:class:`~rlm_core.environments.event_loop.LoopThread`. Its stdout, a Connect server stream
of raw bytes (``framing="binary"``), is pushed from the loop into the core's
:class:`~rlm_core.environments.remote.PushExec`; its stderr is kept as a short tail for
error messages; each write to its stdin is one ``SendInput`` call, run on the loop. The
protocol has no stdin EOF: the process ends with its sandbox, which the launcher deletes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any

from rlm_core.environments.event_loop import LoopThread
from rlm_core.environments.remote import PushExec, status_from_exit_code

MAX_INPUT = 1 << 20
"""Bytes sent per ``SendInput`` call, well under the 4 MiB a Connect server reads by
default."""

INPUT_TIMEOUT = 60.0
"""Seconds one ``SendInput`` call may take (the SDK retries a transient fault within it)."""


class ProcessStream(PushExec):
    """The agent's running process: ``process``, an SDK ``AsyncSandboxProcess`` opened on
    ``runner``'s loop."""

    def __init__(self, runner: LoopThread, process: Any) -> None:
        super().__init__()
        self._runner = runner
        self._process = process
        self._stdout = runner.push(process.stdout, self.stdout, "the Prime process stream")
        self._stderr = runner.submit(self._tail(process.stderr))

    async def _tail(self, chunks: Any) -> None:
        async for chunk in chunks:
            self.stderr.feed(chunk)

    @property
    def pid(self) -> int:
        """The process id in the sandbox."""
        pid: int = self._process.pid
        return pid

    def wait_ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process's stdout to end; whether it did."""
        done, _ = concurrent.futures.wait([self._stdout], timeout)
        return bool(done)

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (a ``SendInput`` call per MiB)."""
        for start in range(0, len(data), MAX_INPUT):
            piece = data[start : start + MAX_INPUT]
            self._runner.run(self._process.write_stdin(piece), timeout=INPUT_TIMEOUT)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exit code (``-N``: killed by signal N), waiting up to ``wait`` seconds for
        the process to end; ``None`` while it runs or when the stream broke first."""
        with contextlib.suppress(
            concurrent.futures.TimeoutError, concurrent.futures.CancelledError
        ):
            self._stdout.result(wait)
        code = self._process.returncode if self._stdout.done() else None
        return None if code is None else status_from_exit_code(int(code))

    def stderr_tail(self) -> str:
        """The last lines of the agent's stderr (all of it once the process has ended)."""
        if self._stdout.done():
            try:
                self._stderr.result(1.0)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                pass
            except Exception:  # the stream broke: what was read is kept
                pass
        return super().stderr_tail()
