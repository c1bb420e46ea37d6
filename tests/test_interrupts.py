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
import textwrap
import threading
import time

import pytest
from hosts import Host, wait_gone

from rlm_core.threads import DaemonThreadPool

IN_FLIGHT = "RLM-TEST-CALL-IN-FLIGHT"

HOST_SCRIPT = textwrap.dedent(
    f"""
    import faulthandler, os, signal, sys, threading
    from rlm_core import RLM

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if it does

    environment, call = sys.argv[1], sys.argv[2]
    never_set = threading.Event()

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
    rlm = RLM(
        backend="scripted",
        backend_kwargs={{"responses": model}},
        environment=environment,
        custom_tools={{"wait_for_ever": wait_for_ever}},
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
