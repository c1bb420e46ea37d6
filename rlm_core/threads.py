"""A thread pool whose workers never keep the host process alive.

:class:`concurrent.futures.ThreadPoolExecutor` joins its worker threads when the interpreter
exits, so one sub-LM call or host tool that never returns keeps the process from exiting,
even after Ctrl+C has ended the completion that started it. :class:`DaemonThreadPool` offers
the same ``submit`` / ``map`` / ``shutdown`` interface with daemon worker threads: the
process exits as soon as its main thread is done, and a call still running is abandoned.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class _WorkItem:
    """One submitted call and the future that receives its outcome."""

    def __init__(self, future: Future[Any], fn: Callable[[], Any]) -> None:
        self.future = future
        self.fn = fn

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn()
        except BaseException as exc:  # delivered to the caller, like ThreadPoolExecutor
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


_Queue = queue.SimpleQueue[_WorkItem | None]


def _work(work: _Queue, idle: threading.Semaphore) -> None:
    """A worker's loop: run items until the stop marker (``None``), which it passes on so
    that every other worker stops too."""
    while True:
        item = work.get()
        if item is None:
            work.put(None)
            return
        item.run()
        del item  # drop the call's arguments and result before waiting for the next one
        idle.release()


class DaemonThreadPool(Executor):
    """Runs calls on at most ``max_workers`` daemon threads, started on demand and reused.

    Use it like :class:`concurrent.futures.ThreadPoolExecutor`: :meth:`submit` returns a
    :class:`concurrent.futures.Future`, :meth:`map` is inherited from
    :class:`concurrent.futures.Executor`, and :meth:`shutdown` stops the workers once the
    queued calls are done (or cancels those with ``cancel_futures=True``). The difference is
    that the interpreter does not wait for the workers at exit. A pool that is dropped without
    :meth:`shutdown` lets its idle workers end.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "rlm-worker") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: _Queue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False
        # When the pool is garbage-collected, tell its workers to stop.
        work = self._work
        self._finalizer = weakref.finalize(self, work.put, None)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; ``RuntimeError`` after :meth:`shutdown`."""
        future: Future[T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put(_WorkItem(future, lambda: fn(*args, **kwargs)))
            self._add_worker_if_needed()
        return future

    def _add_worker_if_needed(self) -> None:
        if self._idle.acquire(blocking=False):
            return  # an idle worker takes the item
        if len(self._threads) >= self.max_workers:
            return  # a busy worker takes it when done
        thread = threading.Thread(
            target=_work,
            args=(self._work, self._idle),
            name=f"{self._prefix}_{len(self._threads)}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls and let the workers end after the queued calls.

        ``cancel_futures`` cancels the calls that have not started; ``wait`` waits for the
        workers to finish what they run (never for the calling thread itself).
        """
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item.future.cancel()
            self._work.put(None)
            threads = list(self._threads)
        self._finalizer.detach()
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()
