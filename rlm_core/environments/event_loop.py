"""An asyncio event loop on a thread of its own, driven from synchronous code.

A launcher is synchronous (:class:`~rlm_core.environments.remote.RemoteLauncher` calls it
from worker threads), while some provider SDKs offer a call only as a coroutine, and their
clients belong to the loop they were made on. :class:`LoopThread` runs one loop for such
an SDK on a daemon thread:

* :meth:`LoopThread.run` runs a coroutine there and waits for its result, up to a timeout;
  a timeout, or a ``KeyboardInterrupt`` while waiting, cancels the coroutine;
* :meth:`LoopThread.submit` starts one without waiting;
* :meth:`LoopThread.push` iterates an async iterator (an SDK's output stream) into a
  :class:`~rlm_core.bridge.carriers.stdio.PushStream`, the ``stdio`` carrier's byte
  stream, so the relay reads it like any other;
* :meth:`LoopThread.close` cancels whatever still runs, waits for it, and ends the thread:
  nothing of it is left afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

__all__ = ["LoopThread", "PushTarget"]

T = TypeVar("T")


class PushTarget(Protocol):
    """Where :meth:`LoopThread.push` delivers chunks: a
    :class:`~rlm_core.bridge.carriers.stdio.PushStream` or anything with its two methods."""

    def push(self, chunk: bytes | str) -> None:
        """Take one chunk."""
        ...

    def end(self, reason: str | None = None) -> None:
        """No more chunks; ``reason`` says why when it was an error."""
        ...


class LoopThread:
    """One asyncio event loop running on a daemon thread named ``name`` until
    :meth:`close`. Usable as a context manager (closed on exit)."""

    def __init__(self, name: str = "rlm-event-loop") -> None:
        self.loop = asyncio.new_event_loop()
        """The loop (create the SDK's clients on it, e.g. inside a coroutine :meth:`run`)."""
        self._closed = False
        self._lock = threading.Lock()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coroutine`` on the loop; its future (``cancel()`` cancels it)."""
        with self._lock:
            if self._closed:
                coroutine.close()
                raise RuntimeError("the event loop thread is closed")
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its error).

        After ``timeout`` seconds it is cancelled and :class:`TimeoutError` is raised; a
        ``KeyboardInterrupt`` (or any other exception) while waiting cancels it too. Must
        not be called from the loop's own thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run() called from its own loop: await instead")
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the call did not finish in {timeout:g} s") from None
        except concurrent.futures.CancelledError:
            raise RuntimeError("the call was cancelled (the event loop thread closed)") from None
        except BaseException:
            future.cancel()
            raise

    def push(
        self, chunks: AsyncIterable[bytes | str], into: PushTarget, what: str
    ) -> concurrent.futures.Future[None]:
        """Iterate ``chunks`` on the loop, handing each to ``into.push``; then
        ``into.end()``, or ``into.end(reason)`` naming ``what`` and the error if the
        iteration raised. Cancelling the returned future (or :meth:`close`) ends it too."""

        async def relay() -> None:
            try:
                async for chunk in chunks:
                    into.push(chunk)
            except asyncio.CancelledError:
                into.end()
                raise
            except Exception as exc:
                into.end(f"reading {what} failed: {type(exc).__name__}: {exc}")
            else:
                into.end()

        return self.submit(relay())

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every task still on the loop, wait up to ``timeout`` seconds for them to
        finish, stop the loop and end its thread. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.close() called from its own loop")
        try:
            done = asyncio.run_coroutine_threadsafe(self._cancel_all(timeout), self.loop)
            done.result(timeout + 1.0)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # a task that ignores cancellation: the loop stops all the same
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()

    async def _cancel_all(self, timeout: float) -> None:
        """Cancel every other task, again while any is left (a task may catch one
        cancellation and wait on), until ``timeout``; then finish the async generators."""
        current = asyncio.current_task()
        deadline = self.loop.time() + timeout
        while True:
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            left = deadline - self.loop.time()
            if not tasks or left <= 0:
                break
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=min(0.1, left))
        await self.loop.shutdown_asyncgens()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
