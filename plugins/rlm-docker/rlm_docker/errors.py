"""The errors the ``docker`` environment raises before a container starts."""

from __future__ import annotations

from rlm_core.exceptions import SandboxError


class DockerEngineError(SandboxError):
    """The container engine's command is missing, or its daemon cannot be reached."""


class DockerImageError(SandboxError):
    """The image is not on the engine and could not be pulled (or pulling is off)."""
