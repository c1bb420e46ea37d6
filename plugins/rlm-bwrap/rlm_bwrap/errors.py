"""The error raised when bubblewrap cannot run here."""

from __future__ import annotations

from rlm_core.exceptions import SandboxError


class BwrapUnavailableError(SandboxError):
    """Bubblewrap cannot build a sandbox on this machine: the ``bwrap`` binary is missing,
    unprivileged user namespaces are disabled, or the interpreter's runtime cannot be
    found. Nothing was started."""
