"""Finding an rlm-core environment by its entry-point name, as ``RLM(environment=...)`` does.

Names resolve through rlm-core's plugin registry, so built-ins (``local``, ``subprocess``,
``loopback``) and installed third-party sandbox plugins are found the same way. Constructing an
environment only stores and checks its settings (rlm-core's contract), so bad settings are
reported here, before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlm_core import Environment, get_registry


def environment_class(name: str) -> type[Environment]:
    """The environment class registered as ``name``.

    Raises ``rlm_core.UnknownEnvironmentError`` (a ``ValueError``) naming the installed
    environments, or ``rlm_core.PluginError`` when the plugin cannot be loaded.
    """
    if not isinstance(name, str):
        raise TypeError(f"environment must be an environment name (str), not {type(name).__name__}")
    factory = get_registry().environment(name).factory
    if not (isinstance(factory, type) and issubclass(factory, Environment)):
        raise TypeError(
            f"the {name!r} environment is registered as {factory!r}, which is not an "
            "rlm_core.Environment subclass"
        )
    return factory


def make_environment(name: str, settings: Mapping[str, Any] | None = None) -> Environment:
    """A new, unstarted ``name`` environment with ``settings`` (its ``environment_kwargs``).

    Raises ``rlm_core.ConfigurationError`` (a ``ValueError``) for a setting the environment
    does not declare, of the wrong type or out of range.
    """
    return environment_class(name)(**dict(settings or {}))
