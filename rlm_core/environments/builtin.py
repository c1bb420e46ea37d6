"""Built-in environments, registered in-process through the same hook as plugins."""

from __future__ import annotations

from collections.abc import Callable

from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.loopback import LoopbackEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.hookspecs import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``local``, ``subprocess`` and ``loopback`` (a cloud sandbox's stand-in)."""
    register("local", LocalEnvironment)
    register("subprocess", SubprocessEnvironment)
    register("loopback", LoopbackEnvironment)
