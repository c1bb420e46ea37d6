"""The service side of a wire-level provider fake: its sandboxes, their output, serving it.

A fake of a provider's service (see :mod:`rlm_conformance.fakes` for its sandboxes and
:mod:`rlm_conformance.fake_http` for an HTTP wire) keeps its running sandboxes in a
:class:`SandboxTable`, relays its processes' output with :func:`output_chunks`, and is
served to a test with the SDK pointed at it by :func:`serving`:

    @contextlib.contextmanager
    def served() -> Iterator[FakeMyCloud]:
        with serving(FakeMyCloud(), reset=my_plugin.image_cache.clear) as fake:
            yield fake
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Protocol, TypeVar

from rlm_conformance.fakes import FakeSandbox


class Boxed(Protocol):
    """A fake's record of one sandbox: it holds the :class:`FakeSandbox` it runs in."""

    @property
    def box(self) -> FakeSandbox:
        """Where the sandbox's files and processes are."""
        ...


S = TypeVar("S", bound=Boxed)


class SandboxTable(dict[str, S]):
    """A fake's running sandboxes by id: a ``dict`` under the fake's ``lock``, and the
    one way a sandbox leaves it, :meth:`end`.

    Ending a sandbox marks it as ending under the lock (so that a second call, from the
    API or from the reaper, does nothing), kills its :class:`FakeSandbox` outside the lock
    (other requests go on meanwhile), then, under the lock again, drops it from the table
    and calls ``record`` to keep how it ended. So the sandbox is listed as running until
    its processes and files are gone, and a caller that sees it gone from :meth:`ids` also
    sees why.
    """

    def __init__(self, lock: contextlib.AbstractContextManager[Any]) -> None:
        super().__init__()
        self.lock = lock
        self._ending: set[str] = set()

    def ids(self) -> list[str]:
        """Ids of the sandboxes still running, sorted."""
        with self.lock:
            return sorted(self)

    def running(self) -> list[S]:
        """The sandboxes still running (a copy, to go through without the lock)."""
        with self.lock:
            return list(self.values())

    def end(self, sandbox_id: str, record: Callable[[S], object]) -> bool:
        """End a running sandbox (every process in it, its files); ``record(sandbox)``
        keeps how it ended. ``False`` if there was none, or it is already ending."""
        with self.lock:
            sandbox = self.get(sandbox_id)
            if sandbox is None or sandbox_id in self._ending:
                return False
            self._ending.add(sandbox_id)
        sandbox.box.kill()
        with self.lock:
            self.pop(sandbox_id, None)
            self._ending.discard(sandbox_id)
            record(sandbox)
        return True


def output_chunks(process: subprocess.Popen[bytes]) -> Iterator[tuple[str, bytes]]:
    """``("stdout", chunk)`` and ``("stderr", chunk)`` as ``process`` writes them, until
    both pipes are closed: each pipe is read by a daemon thread of its own, as much as is
    there (up to 64 KiB) at a time, so neither pipe's writer ever waits on the other's."""
    chunks: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
    for pipe, kind in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=_pump, args=(pipe, kind, chunks), daemon=True).start()
    open_pipes = 2
    while open_pipes:
        item = chunks.get()
        if item is None:
            open_pipes -= 1
            continue
        yield item


def _pump(
    pipe: IO[bytes] | None, kind: str, chunks: queue.SimpleQueue[tuple[str, bytes] | None]
) -> None:
    try:
        while pipe is not None and (chunk := os.read(pipe.fileno(), 1 << 16)):
            chunks.put((kind, chunk))
    except (OSError, ValueError):
        pass
    finally:
        chunks.put(None)


class Service(Protocol):
    """A fake service: started, stopped, and the SDK's settings that point at it."""

    def start(self) -> object:
        """Serve."""
        ...

    def stop(self) -> None:
        """End every sandbox and stop serving."""
        ...

    def environ(self) -> dict[str, str]:
        """The environment variables that point the SDK at the fake."""
        ...


F = TypeVar("F", bound=Service)


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``variables`` set while the block runs (host subprocesses it
    starts inherit them); each is restored afterwards, or removed if it was not set."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def serving(
    fake: F,
    variables: Mapping[str, str] | None = None,
    reset: Callable[[], object] | None = None,
) -> Iterator[F]:
    """``fake`` started, with its :meth:`~Service.environ` and ``variables`` set in
    ``os.environ`` while the block runs (:func:`environment`). Afterwards the variables
    are restored and the fake stopped (which ends every sandbox left). ``reset`` is called
    once the variables are set, and again after they are restored: the place to forget
    what the plugin remembers per account (an image or template built, say)."""
    fake.start()
    try:
        with environment({**fake.environ(), **(variables or {})}):
            if reset is not None:
                reset()
            yield fake
    finally:
        if reset is not None:
            reset()
        fake.stop()
