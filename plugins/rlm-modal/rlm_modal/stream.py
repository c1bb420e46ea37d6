"""The stdio carrier's byte stream over a Modal exec handle (``sandbox.exec(..., text=False)``).

Modal delivers an exec's stdout as a server stream of raw bytes (``TaskExecStdioRead``)
and takes its stdin as one unary ``TaskExecStdinWrite`` per ``drain()``. A daemon thread
iterates stdout into a :class:`~rlm_core.bridge.carriers.stdio.PushStream`, so closing the
stream ends the relay's reading at once even while the SDK still waits on the network.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

from rlm_core.bridge.carriers.stdio import PushStream

MAX_WRITE = 4 * 1024 * 1024
"""Most bytes sent in one stdin write. The SDK refuses more than 16 MiB buffered per
``drain()``; the relay already batches up to 4 MiB per send, so this only splits a larger
send and keeps each RPC well under the SDK's limit."""


class ExecStream:
    """A :class:`~rlm_core.bridge.carriers.stdio.ByteStream` over a Modal
    ``ContainerProcess`` started with ``text=False``."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self._push = PushStream(self._write)
        self._reader = threading.Thread(
            target=self._pump, name="rlm-modal-exec-stdout", daemon=True
        )
        self._reader.start()

    def _pump(self) -> None:
        try:
            for chunk in self._process.stdout:
                self._push.push(bytes(chunk))
        except Exception as exc:
            self._push.end(f"reading the Modal exec's stdout failed: {type(exc).__name__}: {exc}")
        else:
            self._push.end()

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


class StderrTail:
    """The last lines of an exec's stderr, read from its byte stream on a daemon thread."""

    def __init__(self, stream: Any, lines: int = 40) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = b""
        self._thread = threading.Thread(
            target=self._drain, args=(stream,), name="rlm-modal-exec-stderr", daemon=True
        )
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        try:
            for chunk in stream:
                self._feed(bytes(chunk))
        except Exception:  # the sandbox is gone: what was read is kept
            pass
        if self._partial:
            self._lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""

    def _feed(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._lines.append(line.decode("utf-8", "replace").rstrip("\r"))

    def text(self, wait: float = 0.0) -> str:
        """The lines kept so far, waiting up to ``wait`` seconds for the stream's end."""
        if wait > 0:
            self._thread.join(wait)
        return "\n".join(self._lines)
