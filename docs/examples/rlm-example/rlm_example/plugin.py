"""The plugin module the ``rlm.environments`` entry point names.

Importing it is cheap: it imports no SDK (``rlm environments`` imports every plugin
module to list them).
"""

from __future__ import annotations

from collections.abc import Callable

from rlm_core import hookimpl


@hookimpl
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register ``example``: the entry-point name, the name users select."""
    from rlm_example.environment import ExampleEnvironment

    register("example", ExampleEnvironment)
