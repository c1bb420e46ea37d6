"""Ctrl+C ends a host process even while sub-calls or host tools are still running.

Each test runs a real host process whose completion is blocked in a call that never returns
(a sub-LM call of a scripted LM, or a host tool, waiting on an event nobody sets), sends it
SIGINT once the call is in flight, and expects it to report ``CancellationError`` and exit
by itself. The worker threads of :class:`rlm_core.threads.DaemonThreadPool` are checked on
their own too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from hosts import Host, wait_gone

from rlm_core import interrupts
from rlm_core.threads import DaemonThreadPool

IN_FLIGHT = "RLM-TEST-CALL-IN-FLIGHT"
SWALLOWED = "RLM-TEST-CTRL-C-SWALLOWED"

HOST_SCRIPT = textwrap.dedent(
    f"""
    import faulthandler, os, signal, sys, threading, weakref
    from rlm_core import RLM

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if it does

    environment, call = sys.argv[1], sys.argv[2]
    swallowed_in = sys.argv[3] if len(sys.argv) > 3 else None
    never_set = threading.Event()

    def press_ctrl_c_in_a_finalizer():
        # Ctrl+C pressed while a finalizer runs: Python prints "Exception ignored in ..."
        # and goes on as if it had not been pressed.
        class Garbage:
            pass

        def finalize():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs (and raises) here
                pass

        def report(unraisable):
            if unraisable.exc_type is KeyboardInterrupt:
                os.write(1, b"{SWALLOWED}\\n")

        sys.unraisablehook, previous = report, sys.unraisablehook
        garbage = Garbage()
        weakref.finalize(garbage, finalize)
        del garbage
        sys.unraisablehook = previous

    def descendants():
        found, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            try:
                tasks = os.listdir(f"/proc/{{pid}}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{{pid}}/task/{{task}}/children") as f:
                        children = [int(c) for c in f.read().split()]
                except OSError:
                    continue
                found += children
                todo += children
        return found

    def block_forever():
        pids = " ".join(str(p) for p in descendants())
        os.write(1, f"{IN_FLIGHT} {{pids}}\\n".encode())
        never_set.wait()

    def model(messages):
        if messages[0]["role"] != "system":  # a sub-call
            block_forever()
        if swallowed_in == "root-call":
            press_ctrl_c_in_a_finalizer()
        return CELLS[call]

    def wait_for_ever(value):
        block_forever()
        return value

    CELLS = {{
        "llm_query": "```repl\\nprint(llm_query('hello'))\\n```",
        "llm_query_batched": "```repl\\nprint(llm_query_batched(['a', 'b', 'c']))\\n```",
        "rlm_query_batched": "```repl\\nprint(rlm_query_batched(['a', 'b']))\\n```",
        "tool": "```repl\\nprint(wait_for_ever(1))\\n```",
    }}
    if swallowed_in == "cell":
        CELLS[call] = CELLS[call].replace("print(", "press_ctrl_c_in_a_finalizer()\\nprint(", 1)
    if swallowed_in == "before-cell":  # after the loop's last look, as the cell is sent
        from rlm_core import hookimpl
        from rlm_core.plugins import get_registry

        class PressesCtrlC:
            @hookimpl
            def rlm_before_cell(self, code, depth, environment):
                press_ctrl_c_in_a_finalizer()

        get_registry().register(PressesCtrlC())
    rlm = RLM(
        backend="scripted",
        backend_kwargs={{"responses": model}},
        environment=environment,
        custom_tools={{
            "wait_for_ever": wait_for_ever,
            "press_ctrl_c_in_a_finalizer": press_ctrl_c_in_a_finalizer,
        }},
    )
    rlm.completion("some context")
    print("the completion returned", flush=True)
    """
)


# -- a host process interrupted with a call in flight ---------------------------------------


def stacks_of(host: Host) -> str:
    """The stacks of every thread of a hung host (dumped by faulthandler on SIGUSR1), and
    whatever else it wrote to stderr; the host is killed."""
    host.process.send_signal(signal.SIGUSR1)
    time.sleep(1.0)
    host.process.kill()
    _, err = host.process.communicate(timeout=30)
    return str(err)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("environment", "call"),
    [
        ("local", "llm_query_batched"),  # the RLM's sub-call worker threads
        ("local", "rlm_query_batched"),
        ("subprocess", "llm_query"),  # the environment's bridge threads
        ("subprocess", "llm_query_batched"),  # both
        ("subprocess", "tool"),  # a host tool called from a cell
    ],
)
def test_ctrl_c_ends_the_host_while_a_call_never_returns(environment: str, call: str) -> None:
    with Host(HOST_SCRIPT, environment, call) as host:
        line = host.read_line()
        assert line.startswith(IN_FLIGHT), line
        started = [int(pid) for pid in line.split()[1:]]
        host.tracked.extend(started)
        host.process.send_signal(signal.SIGINT)
        try:
            status, out, err = host.finish(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the host did not exit after Ctrl+C ({environment}, {call}); its threads:\n"
                + stacks_of(host)
            )
        assert status == 1, err
        assert "rlm_core.exceptions.CancellationError: Execution cancelled by user" in err
        assert "the completion returned" not in out
        # Nothing the host started outlives it (agents, fork servers, their directories).
        assert wait_gone(started) == []
        assert host.leftovers() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("environment", "call", "swallowed_in"),
    [
        ("local", "llm_query_batched", "cell"),  # then waits on sub-call worker threads
        ("local", "rlm_query_batched", "cell"),
        ("subprocess", "llm_query", "root-call"),  # then would run a cell that never ends
        ("subprocess", "llm_query", "before-cell"),  # then waits for that cell
    ],
)
def test_a_ctrl_c_that_python_swallowed_still_ends_the_host(
    environment: str, call: str, swallowed_in: str
) -> None:
    """CPython drops a ``KeyboardInterrupt`` raised in a finalizer ("Exception ignored in
    ..."); Ctrl+C pressed at that moment must still end the completion."""
    with Host(HOST_SCRIPT, environment, call, swallowed_in) as host:
        try:
            status, out, err = host.finish(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the host did not exit after a swallowed Ctrl+C ({environment}, {call}); "
                "its threads:\n" + stacks_of(host)
            )
        assert status == 1, err
        assert "rlm_core.exceptions.CancellationError: Execution cancelled by user" in err
        assert "the completion returned" not in out
        assert SWALLOWED in out  # Python did drop the KeyboardInterrupt
        assert host.leftovers() == []


# -- the pool itself ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_worker_blocked_for_ever_does_not_keep_the_interpreter_alive() -> None:
    script = textwrap.dedent(
        """
        import threading
        from rlm_core.threads import DaemonThreadPool

        pool = DaemonThreadPool(max_workers=2)
        started = threading.Event()
        pool.submit(lambda: (started.set(), threading.Event().wait()))
        started.wait()
        print("leaving", flush=True)
        """
    )
    with Host(script) as host:
        status, out, err = host.finish(timeout=30)
        assert status == 0, err
        assert out == "leaving\n"


def test_results_exceptions_and_map_come_back_in_order() -> None:
    pool = DaemonThreadPool(max_workers=3)
    try:
        assert pool.submit(pow, 2, 10).result() == 1024
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result()
        assert list(pool.map(lambda x: x * x, range(20))) == [x * x for x in range(20)]
    finally:
        pool.shutdown()


def test_at_most_max_workers_run_at_once_and_threads_are_reused() -> None:
    pool = DaemonThreadPool(max_workers=3, thread_name_prefix="rlm-test")
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    names: set[str] = set()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            names.add(threading.current_thread().name)
        release.wait()
        with lock:
            running -= 1

    try:
        futures = [pool.submit(work) for _ in range(10)]
        release.set()
        for future in futures:
            future.result()
        assert peak <= 3
        for _ in range(3):
            pool.submit(work).result()  # idle workers take these
        assert len(names) <= 3
        assert all(name.startswith("rlm-test_") for name in names)
        assert all(t.daemon for t in threading.enumerate() if t.name in names)
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_refuses_new_calls() -> None:
    pool = DaemonThreadPool(max_workers=1)
    release = threading.Event()
    running = pool.submit(release.wait)
    queued = [pool.submit(lambda: "never") for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(future.cancelled() for future in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    release.set()
    assert running.result() is True


def test_shutdown_lets_queued_calls_finish_and_waits_for_them() -> None:
    pool = DaemonThreadPool(max_workers=2)
    futures = [pool.submit(abs, -x) for x in range(1, 7)]
    pool.shutdown(wait=True)
    assert [future.result() for future in futures] == [1, 2, 3, 4, 5, 6]


def test_a_dropped_pool_lets_its_idle_workers_end() -> None:
    pool = DaemonThreadPool(max_workers=2, thread_name_prefix="rlm-dropped-pool")
    pool.submit(lambda: None).result()
    workers = [t for t in threading.enumerate() if t.name.startswith("rlm-dropped-pool")]
    assert workers
    del pool
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


# -- a Ctrl+C recorded while a completion runs -----------------------------------------------


@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    """Python's default SIGINT handling for the test (a test runner may have its own)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def swallow_a_ctrl_c() -> None:
    """Ctrl+C raised in a finalizer, where Python reports it and drops it."""

    def finalize() -> None:
        signal.raise_signal(signal.SIGINT)

    dropped: list[type[BaseException] | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda report: dropped.append(report.exc_type)
    try:
        weakref.finalize(Garbage(), finalize)  # collected at once: the finalizer runs now
    finally:
        sys.unraisablehook = previous
    assert dropped == [KeyboardInterrupt]


class Garbage:
    pass


@pytest.mark.usefixtures("default_ctrl_c")
def test_a_swallowed_ctrl_c_is_raised_again_by_the_waits_under_recording() -> None:
    pool = DaemonThreadPool(max_workers=1)
    never = threading.Event()
    try:
        with interrupts.recording_ctrl_c():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            swallow_a_ctrl_c()  # goes on: Python dropped the KeyboardInterrupt
            with pytest.raises(KeyboardInterrupt):
                interrupts.wait_for(pool.submit(never.wait))
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()  # still recorded until the outermost use ends
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        interrupts.check()  # cleared
    finally:
        never.set()
        pool.shutdown()


@pytest.mark.usefixtures("default_ctrl_c")
def test_recording_nests_and_is_cleared_only_by_the_outermost_use() -> None:
    with interrupts.recording_ctrl_c():
        handler = signal.getsignal(signal.SIGINT)
        with interrupts.recording_ctrl_c():
            assert signal.getsignal(signal.SIGINT) is handler
            swallow_a_ctrl_c()
        assert signal.getsignal(signal.SIGINT) is handler
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    interrupts.check()


@pytest.mark.usefixtures("default_ctrl_c")
def test_wait_for_gives_the_calls_result_or_its_own_exception() -> None:
    pool = DaemonThreadPool(max_workers=2)
    try:
        with interrupts.recording_ctrl_c():
            assert interrupts.wait_for(pool.submit(lambda: time.sleep(0.3) or 7)) == 7
            with pytest.raises(TimeoutError, match="the call's own"):
                interrupts.wait_for(pool.submit(_raise, TimeoutError("the call's own")))
    finally:
        pool.shutdown()


def _raise(exc: BaseException) -> None:
    raise exc


def test_an_applications_own_ctrl_c_handler_is_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGINT, own)
    try:
        with interrupts.recording_ctrl_c():
            assert signal.getsignal(signal.SIGINT) is own
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)


def test_nothing_is_recorded_off_the_main_thread() -> None:
    seen: list[object] = []

    def run() -> None:
        with interrupts.recording_ctrl_c():
            seen.append(signal.getsignal(signal.SIGINT))
            interrupts.check()

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]
