"""Settings every test process of the repository shares (tests/, plugins/*/tests and
conformance_tests/tests).

The report's header names the provider SDK each installed plugin was tested with, so a run
never tests another release than it says (``.venv`` holds every plugin resolved together;
see ``.ci/sdk_range.py`` for the releases tested beside it).

Ctrl-C is tested for real (``SIGINT`` sent to a host process, or to the test process's
own main thread), so ``SIGINT`` must raise ``KeyboardInterrupt`` here as it does in a
terminal. A process started in the background by a non-interactive shell inherits
``SIGINT`` ignored, and Python then leaves it ignored; so do pytest-xdist's workers and
every host process a test starts. Put Python's default handler back before any test.
"""

from __future__ import annotations

import importlib.metadata
import signal
import threading

from packaging.requirements import Requirement

OWN = {"rlm-core", "rlm-conformance"}


def pytest_configure() -> None:
    """Let ``SIGINT`` raise ``KeyboardInterrupt`` in this process and in its children."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header() -> str:
    """``provider SDKs: rlm-e2b: e2b 2.56.0; ...`` for every installed ``rlm-*`` plugin."""
    rows = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"]):
        name = dist.metadata["Name"]
        if not name.startswith("rlm-") or name in OWN:
            continue
        sdks = [Requirement(text) for text in dist.requires or [] if "extra ==" not in text]
        found = [
            f"{req.name} {importlib.metadata.version(req.name)}"
            for req in sdks
            if req.name not in OWN
        ]
        if found:
            rows.append(f"{name}: {', '.join(found)}")
    return "provider SDKs: " + "; ".join(rows)
