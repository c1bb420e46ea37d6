"""The floor under workload 6: a bare gRPC echo with the bridge's thread hand-offs.

Two processes on a Unix socket, raw bytes (no protobuf, no rlm_core). The "agent" serves
one bidirectional stream: its main thread puts a 24-byte request in a queue that the
stream's response generator yields, and waits on an event that a reader thread sets when
the 240-byte answer arrives. The "host" dials it, reads requests in a reader thread, hands
each to a thread pool, and the pool thread queues the answer for the request iterator.
Those are the hand-offs a sub-call makes in rlm-core, so the difference between this and
workload 6 is what rlm-core itself costs.

``python bench/grpc_floor.py --reps N`` prints the median and p99 in microseconds;
:func:`measure` returns the round-trip times in seconds.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

METHOD = "/bench.Floor/Stream"
REQUEST = b"r" * 24
ANSWER = b"a" * 240


def _identity(data: bytes) -> bytes:
    return data


def serve(address: str, reps: int, warmup: int) -> None:
    """The agent side: serve the stream, make ``warmup + reps`` round trips, print times."""
    outbox: queue.Queue[bytes | None] = queue.Queue()
    pending: dict[int, threading.Event] = {}
    connected = threading.Event()

    def stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        def read() -> None:
            try:
                for message in requests:
                    pending.pop(int.from_bytes(message[:4], "big")).set()
            except grpc.RpcError:
                pass  # the stream ended

        threading.Thread(target=read, daemon=True).start()
        connected.set()
        while (message := outbox.get()) is not None:
            yield message

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.stream_stream_rpc_method_handler(stream, _identity, _identity)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Floor", {"Stream": handler}),)
    )
    server.add_insecure_port(address)
    server.start()
    print("READY", flush=True)
    connected.wait()
    times = []
    for i in range(warmup + reps):
        done = threading.Event()
        pending[i] = done
        start = time.perf_counter()
        outbox.put(i.to_bytes(4, "big") + REQUEST[4:])
        done.wait()
        times.append(time.perf_counter() - start)
    print(" ".join(repr(t) for t in times[warmup:]), flush=True)
    outbox.put(None)
    server.stop(grace=None).wait()


def measure(reps: int, warmup: int = 200) -> list[float]:
    """Round-trip times (seconds) of ``reps`` sequential echoes after ``warmup``."""
    with tempfile.TemporaryDirectory(prefix="rlm-bench-floor-") as tmp:
        address = f"unix:{Path(tmp) / 'floor.sock'}"
        command = [sys.executable, __file__, "--serve", address]
        agent = subprocess.Popen(
            [*command, "--reps", str(reps), "--warmup", str(warmup)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert agent.stdout is not None
        if agent.stdout.readline().strip() != "READY":
            raise RuntimeError("the echo server did not start")
        channel = grpc.insecure_channel(address)
        answers: queue.Queue[bytes | None] = queue.Queue()
        pool = futures.ThreadPoolExecutor(max_workers=8)

        def outgoing() -> Iterator[bytes]:
            while (message := answers.get()) is not None:
                yield message

        call = channel.stream_stream(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )(outgoing())

        def answer(request: bytes) -> None:
            answers.put(request[:4] + ANSWER[4:])

        def read() -> None:
            try:
                for request in call:
                    pool.submit(answer, request)
            except grpc.RpcError:
                pass  # the server stopped

        threading.Thread(target=read, daemon=True).start()
        line = agent.stdout.readline()
        agent.wait()
        answers.put(None)
        call.cancel()
        channel.close()
        pool.shutdown(wait=False)
        return [float(t) for t in line.split()]


def main(argv: list[str] | None = None) -> int:
    """Run either side (``--serve`` is the agent side, started by :func:`measure`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="ADDRESS")
    parser.add_argument("--reps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.reps, args.warmup)
        return 0
    times = sorted(measure(args.reps, args.warmup))
    median, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
    print(f"median {median * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
