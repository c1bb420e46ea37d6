"""The plugin's default Daytona image: Python with ``grpcio`` and ``protobuf``, nothing else.

The agent itself is not in the image: it is uploaded at each start (one small file built
from the host's ``rlm_core``, so it always matches the host). The image only saves every
session a ``pip install``, which would need egress the sandbox does not have by default.
Daytona builds a declarative image once into a snapshot and reuses it for the same
Dockerfile, so only the first session of an account waits for the build.
"""

from __future__ import annotations

from typing import Any

PYTHON_IMAGE = "python:3.12-slim"
"""The base image: Debian with CPython 3.12."""

PACKAGES = ("grpcio>=1.60", "protobuf>=5.26")
"""What the agent needs from the sandbox's package index (never ``rlm-core``: the public
index holds an unrelated package of that name)."""


def agent_image() -> Any:
    """The default image (a ``daytona.Image``): :data:`PYTHON_IMAGE` plus :data:`PACKAGES`."""
    from daytona import Image

    return Image.base(PYTHON_IMAGE).pip_install(list(PACKAGES))
