"""LoopThread: coroutines and async iterators driven from synchronous code, and nothing of
the loop left once it is closed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator

import pytest

from rlm_core.bridge.carriers.stdio import CarrierClosed, PushStream
from rlm_core.environments.event_loop import LoopThread

pytestmark = pytest.mark.timeout(60)


def loop_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def fail() -> None:
    raise ValueError("no good")


def test_run_returns_the_result_or_raises_the_error() -> None:
    with LoopThread("rlm-test-loop-run") as runner:
        assert runner.run(add(2, 3)) == 5
        with pytest.raises(ValueError, match="no good"):
            runner.run(fail())
    assert loop_threads("rlm-test-loop-run") == []
    assert runner.loop.is_closed()


def test_a_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with LoopThread() as runner:
        with pytest.raises(TimeoutError, match=r"did not finish in 0\.2 s"):
            runner.run(forever(), timeout=0.2)
        assert cancelled.wait(10)


CTRL_C = textwrap.dedent(
    """
    import asyncio, os
    from rlm_core.environments.event_loop import LoopThread

    async def forever():
        try:
            os.write(1, b"waiting\\n")
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            os.write(1, b"cancelled\\n")
            raise

    runner = LoopThread()
    try:
        runner.run(forever())
    except KeyboardInterrupt:
        os.write(1, b"interrupted\\n")
    runner.close()
    os.write(1, b"closed\\n")
    """
)


def test_ctrl_c_while_waiting_cancels_the_coroutine() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CTRL_C], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "waiting\n"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0
    assert sorted(out.split()) == ["cancelled", "closed", "interrupted"]


async def chunks(items: list[bytes], error: Exception | None = None) -> AsyncIterator[bytes]:
    for item in items:
        await asyncio.sleep(0)
        yield item
    if error is not None:
        raise error


def test_push_relays_an_async_iterator_into_a_push_stream() -> None:
    sent: list[bytes] = []
    with LoopThread() as runner:
        stream = PushStream(sent.append)
        runner.push(chunks([b"a", b"b", b"c"]), stream, "the output").result(10)
        assert list(stream) == [b"a", b"b", b"c"]
        broken = PushStream(sent.append)
        runner.push(chunks([b"x"], OSError("reset")), broken, "the output")
        with pytest.raises(CarrierClosed, match="reading the output failed: OSError: reset"):
            list(broken)


def test_close_cancels_what_still_runs_and_ends_the_thread() -> None:
    finished: list[str] = []

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield b"."
        finally:
            finished.append("iterator")

    async def sleeper() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("task")

    runner = LoopThread("rlm-test-loop-close")
    stream = PushStream(lambda data: None)
    runner.push(endless(), stream, "the output")
    pending = runner.submit(sleeper())
    outcome: dict[str, BaseException] = {}

    def waiter() -> None:
        try:
            runner.run(asyncio.sleep(3600))
        except BaseException as exc:
            outcome["error"] = exc

    waiting = threading.Thread(target=waiter)
    waiting.start()
    assert next(iter(stream)) == b"."
    runner.close()
    waiting.join(10)
    assert isinstance(outcome["error"], RuntimeError)
    assert pending.cancelled()
    assert sorted(finished) == ["iterator", "task"]
    assert loop_threads("rlm-test-loop-close") == []
    assert runner.closed and runner.loop.is_closed()
    runner.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(add(1, 1))
