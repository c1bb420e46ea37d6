"""Which environment the suite runs against, and how to build it."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from rlm_core import hookimpl
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import Environment
from rlm_core.plugins import get_registry

AGENT = "agent"
"""An inferred capability: the environment is agent-backed (cells run in
``python -m rlm_core.agent`` behind the gRPC bridge), so the bridge's security is tested."""

_registered: dict[type[Environment], str] = {}
_lock = threading.Lock()


def register_class(cls: type[Environment]) -> str:
    """Register an environment class that no entry point names (a plugin author's class
    under test) under a private name the RLM can select; return that name."""
    with _lock:
        name = _registered.get(cls)
        if name is not None:
            return name
        name = f"conformance:{cls.__module__}.{cls.__qualname__}"

        class _Plugin:
            @hookimpl
            def rlm_register_environments(self, register: Callable[..., None]) -> None:
                register(name, cls)

        get_registry().register(_Plugin(), name=name)
        _registered[cls] = name
        return name


@dataclass(frozen=True)
class EnvironmentSetup:
    """The environment under test: a registered name (``"subprocess"``) or an environment
    class, with the ``environment_kwargs`` to build it with.

    ``label`` names the setup in the summary (default: the name and the settings).
    """

    environment: str | type[Environment]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        """The name an RLM selects it by (a class is registered under a private one)."""
        if isinstance(self.environment, str):
            return self.environment
        return register_class(self.environment)

    @property
    def environment_class(self) -> type[Environment]:
        """The environment's class (loads its plugin, never starts anything)."""
        if not isinstance(self.environment, str):
            return self.environment
        factory = get_registry().environment(self.environment).factory
        if not (isinstance(factory, type) and issubclass(factory, Environment)):
            raise TypeError(f"environment {self.environment!r} is not an Environment class")
        return factory

    def build(self, **overrides: Any) -> Environment:
        """A new, unstarted environment with the setup's settings plus ``overrides``."""
        return self.environment_class(**{**self.kwargs, **overrides})

    def capabilities(self) -> frozenset[str]:
        """What the environment claims with these settings (read from an unstarted
        instance), plus :data:`AGENT` when it is agent-backed."""
        env = self.build()
        claimed = frozenset(env.capabilities)
        if isinstance(env, AgentEnvironment):
            claimed |= {AGENT}
        return claimed

    def describe(self) -> str:
        """How the summary names this setup."""
        if self.label:
            return self.label
        name = (
            self.environment
            if isinstance(self.environment, str)
            else f"{self.environment.__module__}.{self.environment.__qualname__}"
        )
        return name + (f" {json.dumps(dict(self.kwargs), sort_keys=True)}" if self.kwargs else "")

    def distribution(self) -> tuple[str, str]:
        """``(distribution, version)`` that provides the environment."""
        if isinstance(self.environment, str):
            reg = get_registry().environment(self.environment)
            if reg.distribution:
                return reg.distribution, reg.version or "?"
            module = getattr(reg.factory, "__module__", "")
        else:
            module = self.environment.__module__
        top = module.split(".")[0]
        for dist in metadata.packages_distributions().get(top, []):
            return dist, metadata.version(dist)
        return f"{top} (not installed as a distribution)", "-"

    def reference(self) -> str:
        """How another process builds the same environment: the registered name, or
        ``module:qualname`` of the class."""
        if isinstance(self.environment, str):
            return self.environment
        return f"{self.environment.__module__}:{self.environment.__qualname__}"


def resolve_reference(reference: str) -> type[Environment] | str:
    """The inverse of :meth:`EnvironmentSetup.reference`."""
    if ":" not in reference:
        return reference
    module, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, Environment)):
        raise TypeError(f"{reference} is not an Environment class")
    return target
