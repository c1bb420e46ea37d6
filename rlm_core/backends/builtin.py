"""Built-in backends, registered in-process through the same hook as plugins.

Backends whose SDKs are optional extras are registered with factories that import the
SDK only when a backend is created, so listing backends imports no LM SDK.
"""

from __future__ import annotations

from collections.abc import Callable

from rlm_core.backends.scripted import ScriptedBackend
from rlm_core.hookspecs import hookimpl


@hookimpl
def rlm_register_backends(register: Callable[..., None]) -> None:
    """Register ``scripted`` (more built-ins are added by the backend modules)."""
    register("scripted", ScriptedBackend)
