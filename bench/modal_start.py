"""Session start on the ``modal`` environment, through the fake Modal service.

The unmodified ``modal`` SDK talks to ``plugins/rlm-modal/tests/modal_fake.py`` on
127.0.0.1; each sandbox is a local isolated process tree. A start is split into:

* **create**: app lookup, image get-or-create (cached after the first session) and
  ``SandboxCreateV2``;
* **agent ship**: the agent bundle uploaded with ``filesystem.write_bytes``;
* **agent ready**: the exec started, the agent's interpreter up, secrets in, ready line
  out, handshake done (``env.start`` returns).

Medians of N sessions (the first one, which asks for the image, is reported apart). On real
Modal the create adds the provider's scheduling and the ship and ready steps add network
round trips; the fake shows the plugin's own share.

    .venv/bin/python bench/modal_start.py            # 20 sessions
    .venv/bin/python bench/modal_start.py -n 5 --tls
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "rlm-modal" / "tests"))

from modal_fake import ModalFake
from rlm_conformance.doubles import RecordingSubcalls
from rlm_modal import ModalEnvironment
from rlm_modal.launcher import ModalLauncher

from rlm_core.environments.base import Session

STEPS = ("create", "agent ship", "agent ready", "total")


def one_start(tls: bool) -> dict[str, float]:
    """Start one session, run one trivial cell, close; the step times in seconds."""
    env = ModalEnvironment(tls=tls)
    began = time.monotonic()
    env.start(Session(subcalls=RecordingSubcalls()))
    total = time.monotonic() - began
    try:
        launcher = env.active_launcher
        assert isinstance(launcher, ModalLauncher)
        assert env.execute("x = 1").error is None
        create, ship = launcher.timings["create"], launcher.timings["ship"]
        return {
            "create": create,
            "agent ship": ship,
            "agent ready": total - create - ship,
            "total": total,
        }
    finally:
        env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="sessions to time (default 20)")
    parser.add_argument("--tls", action="store_true", help="pinned session TLS on the bridge")
    args = parser.parse_args()
    fake = ModalFake().start()
    os.environ.update(fake.environ())
    try:
        first = one_start(args.tls)
        builds = fake.image_builds
        runs = [one_start(args.tls) for _ in range(args.n)]
        rebuilt = fake.image_builds - builds
    finally:
        fake.stop()
    print(f"modal session start through the fake (tls={args.tls}), milliseconds")
    print(f"{'step':<12} {'first':>8} {'median':>8} {'min':>8} {'max':>8}   (n={args.n})")
    for step in STEPS:
        values = [run[step] * 1000 for run in runs]
        print(
            f"{step:<12} {first[step] * 1000:>8.1f} {statistics.median(values):>8.1f} "
            f"{min(values):>8.1f} {max(values):>8.1f}"
        )
    print(f"image layers built after the first session: {rebuilt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
