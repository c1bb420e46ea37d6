"""Session start of the ``e2b`` environment through the wire-level fake, step by step.

    .venv/bin/python bench/e2b_start.py [N]

Starts N sessions (default 10) against the fake E2B service of rlm-e2b's tests (the
unmodified SDK as the client; each sandbox an isolated local process) and prints the median
and spread of each step: create (the REST call), agent ship (uploading the agent bundle
through envd), agent ready (starting it over commands.run until the handshake is done),
and the whole start. The template is built before the first session (once, as on E2B).
Loopback only: real E2B adds its own network and sandbox boot times.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "rlm-e2b" / "tests"))

from e2b_fixtures import serving
from rlm_conformance.doubles import RecordingSubcalls
from rlm_e2b.environment import E2BEnvironment
from rlm_e2b.template import ensure_template

from rlm_core.environments.base import Session

STEPS = ("create", "agent ship", "agent ready", "whole start")


def one_start() -> dict[str, float]:
    """Start and close one session; seconds per step."""
    marks: dict[str, float] = {}
    env = E2BEnvironment()

    def mark(message: str) -> None:  # the launcher reports each step as it begins
        marks.setdefault(message.split(" (")[0], time.perf_counter())

    env._report_progress = mark  # type: ignore[method-assign]
    began = time.perf_counter()
    env.start(Session(subcalls=RecordingSubcalls()))
    ready = time.perf_counter()
    env.close()
    created = next(v for k, v in marks.items() if k.startswith("creating"))
    return {
        "create": marks["uploading the agent"] - created,
        "agent ship": marks["starting the agent"] - marks["uploading the agent"],
        "agent ready": ready - marks["starting the agent"],
        "whole start": ready - began,
    }


def main() -> int:
    """Run the benchmark and print the table."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with serving():
        ensure_template()
        one_start()  # warm-up: imports, the fake image, connection pools
        samples = [one_start() for _ in range(runs)]
    print(f"e2b session start through the fake ({runs} runs, pid {os.getpid()})\n")
    print("| step | median ms | min ms | max ms |\n| --- | ---: | ---: | ---: |")
    for step in STEPS:
        values = [sample[step] * 1000 for sample in samples]
        print(
            f"| {step} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
