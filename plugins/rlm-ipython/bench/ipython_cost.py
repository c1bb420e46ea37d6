"""Start and per-cell cost of the ``ipython`` environment, beside ``local``, ``subprocess``
and (when its venv is there) ``rlms`` 0.1.3's ``ipython`` environment.

* **start**: construct and start an environment (``rlms``: construct, which starts it),
  median of N; the first start of a kind in the process is shown apart (imports, the fork
  server, the first spare agent);
* **cell**: one ``x = x + 1`` cell, median of 200 in one environment;
* **value cell**: one cell whose last expression is shown (``x``), median of 200.

    .venv/bin/python plugins/rlm-ipython/bench/ipython_cost.py          # N = 10
    .venv/bin/python plugins/rlm-ipython/bench/ipython_cost.py -n 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RLMS_PYTHON = Path(__file__).resolve().parents[3] / "bench" / ".venv-rlms" / "bin" / "python"

KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("local", {}),
    "ipython in_process": ("ipython", {}),
    "subprocess": ("subprocess", {}),
    "ipython subprocess": ("ipython", {"kernel_mode": "subprocess"}),
    "ipython subprocess, prewarm off": ("ipython", {"kernel_mode": "subprocess", "prewarm": False}),
}

RLMS_KINDS = {
    "rlms ipython in_process": {"kernel_mode": "in_process"},
    "rlms ipython subprocess": {"kernel_mode": "subprocess"},
}

# Run with rlms's interpreter: prints {"first": s, "starts": [s...], "cell": [s...], "value": [...]}
RLMS_PROBE = """
import json, sys, time
from rlm.environments.ipython_repl import IPythonREPL
kwargs, n = json.loads(sys.argv[1]), int(sys.argv[2])
def start():
    t = time.perf_counter(); env = IPythonREPL(**kwargs); return env, time.perf_counter() - t
env, first = start()
env.cleanup()
starts = []
for _ in range(n):
    env, took = start(); starts.append(took); env.cleanup()
env, _ = start()
env.execute_code("x = 0")
def cells(code):
    out = []
    for _ in range(200):
        t = time.perf_counter(); env.execute_code(code); out.append(time.perf_counter() - t)
    return out
result = {"first": first, "starts": starts, "cell": cells("x = x + 1"), "value": cells("x")}
print(json.dumps(result))
env.cleanup()
"""


def measure_ours(name: str, settings: dict[str, Any], n: int) -> dict[str, Any]:
    """Start times and cell times of one of our environments, in seconds."""
    from rlm_conformance.doubles import RecordingSubcalls

    from rlm_core.environments.base import Environment, Session
    from rlm_core.plugins import get_registry

    factory: Callable[..., Environment] = get_registry().environment(name).factory

    def start() -> tuple[Environment, float]:
        began = time.perf_counter()
        env = factory(**settings)
        env.start(Session(subcalls=RecordingSubcalls()))
        return env, time.perf_counter() - began

    env, first = start()
    env.close()
    starts = []
    for _ in range(n):
        env, took = start()
        starts.append(took)
        env.close()
    env, _ = start()
    try:
        env.execute("x = 0")

        def cells(code: str) -> list[float]:
            times = []
            for _ in range(200):
                began = time.perf_counter()
                env.execute(code)
                times.append(time.perf_counter() - began)
            return times

        return {"first": first, "starts": starts, "cell": cells("x = x + 1"), "value": cells("x")}
    finally:
        env.close()


def measure_rlms(settings: dict[str, Any], n: int) -> dict[str, Any] | None:
    """The same through rlms's interpreter, or ``None`` when it is not installed."""
    if not RLMS_PYTHON.exists():
        return None
    out = subprocess.run(
        [str(RLMS_PYTHON), "-c", RLMS_PROBE, json.dumps(settings), str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Print one Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10, help="starts per kind (default 10)")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, (name, settings) in KINDS.items():
        rows.append((label, measure_ours(name, settings, args.n)))
    for label, settings in RLMS_KINDS.items():
        measured = measure_rlms(settings, args.n)
        if measured is not None:
            rows.append((label, measured))
    print("| environment | first start | start (median) | cell (median) | value cell (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, m in rows:
        start = statistics.median(m["starts"]) * 1000
        print(
            f"| {label} | {m['first'] * 1000:.0f} ms | {start:.1f} ms"
            f" | {statistics.median(m['cell']) * 1e6:.0f} µs"
            f" | {statistics.median(m['value']) * 1e6:.0f} µs |"
        )
    print(f"\n{args.n} starts per kind; 200 cells each; Python {sys.version.split()[0]}.")


if __name__ == "__main__":
    main()
