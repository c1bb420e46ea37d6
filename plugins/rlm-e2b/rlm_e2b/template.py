"""The plugin's own E2B template: Python 3.12 with ``grpcio`` and ``protobuf``, nothing else.

The agent itself is not in the template: it is uploaded at each start (one small file built
from the host's ``rlm_core``, so it always matches the host). The template only saves every
session a ``pip install``, which would need egress the sandbox does not have by default.
It is built once per E2B account and size, under a name that says what is in it, and found
by that name afterwards (``Template.exists``), so a second session, or a second host, does
not build it again. Build it ahead of the first session with::

    python -m rlm_e2b.template [--cpu-count N] [--memory-mb N]
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
"""Bumped whenever :func:`recipe` changes, so a new name is built."""

PYTHON_IMAGE = "3.12"
"""The Python image the template starts from."""

PACKAGES = ("grpcio>=1.60", "protobuf>=5.26")
"""What the agent needs from the sandbox's package index (never ``rlm-core``: the public
index holds an unrelated package of that name)."""

_known: set[str] = set()
_lock = threading.Lock()


def template_name(cpu_count: int | None = None, memory_mb: int | None = None) -> str:
    """The plugin's template name for this size: ``rlm-core-agent-v1[-2cpu][-4096mb]``."""
    name = f"rlm-core-agent-v{RECIPE_VERSION}"
    if cpu_count is not None:
        name += f"-{cpu_count}cpu"
    if memory_mb is not None:
        name += f"-{memory_mb}mb"
    return name


def recipe() -> Any:
    """The template's build steps (an ``e2b.Template``)."""
    from e2b import Template

    return Template().from_python_image(PYTHON_IMAGE).pip_install(list(PACKAGES))


def ensure_template(
    cpu_count: int | None = None,
    memory_mb: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> str:
    """The plugin's template name for this size, built first if the account lacks it
    (checked once per process)."""
    from e2b import Template

    name = template_name(cpu_count, memory_mb)
    with _lock:
        if name in _known:
            return name
        if not Template.exists(name):
            progress(f"building the E2B template {name} (once per account and size)")
            Template.build(
                recipe(),
                name,
                cpu_count=cpu_count,
                memory_mb=memory_mb,
                on_build_logs=lambda entry: log.debug("template %s: %s", name, entry),
            )
        _known.add(name)
    return name


def main(argv: list[str] | None = None) -> int:
    """``python -m rlm_e2b.template``: build the template now (E2B_API_KEY must be set)."""
    parser = argparse.ArgumentParser(prog="python -m rlm_e2b.template", description=__doc__)
    parser.add_argument("--cpu-count", type=int)
    parser.add_argument("--memory-mb", type=int)
    args = parser.parse_args(argv)
    print(ensure_template(args.cpu_count, args.memory_mb, progress=print))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
