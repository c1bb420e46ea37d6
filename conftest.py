"""Settings every test process of the repository shares (tests/, plugins/*/tests and
conformance_tests/tests).

Ctrl-C is tested for real (``SIGINT`` sent to a host process, or to the test process's
own main thread), so ``SIGINT`` must raise ``KeyboardInterrupt`` here as it does in a
terminal. A process started in the background by a non-interactive shell inherits
``SIGINT`` ignored, and Python then leaves it ignored; so do pytest-xdist's workers and
every host process a test starts. Put Python's default handler back before any test.
"""

from __future__ import annotations

import signal
import threading


def pytest_configure() -> None:
    """Let ``SIGINT`` raise ``KeyboardInterrupt`` in this process and in its children."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
