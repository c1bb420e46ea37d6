"""Bubblewrap sandboxes for rlm-core: ``RLM(environment="bwrap")``.

The agent runs as a child process inside ``bwrap`` with every namespace unshared and a
read-only view of the Python runtime only. Linux, with bubblewrap installed and
unprivileged user namespaces enabled.
"""

from rlm_bwrap.environment import BwrapEnvironment
from rlm_bwrap.errors import BwrapUnavailableError

__all__ = ["BwrapEnvironment", "BwrapUnavailableError"]
