"""The plugin manager: built-in registration and lazy loading of entry-point plugins.

Built-in environments and backends are ordinary plugin modules registered in-process
(:data:`DEFAULT_PLUGINS`), so they go through the same hooks as third-party plugins.
Third-party plugins are found in the entry-point groups ``rlm.environments`` and
``rlm.backends``; **the entry-point name is the name a user selects**, and selecting a name
imports only that entry point. ``RLM_LOAD_PLUGINS`` (comma-separated entry-point or
distribution names) is an allow-list: unset allows every installed plugin, empty allows
none. Model prices a plugin registers (``rlm_register_prices``) are collected with it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from rlm_core import hookspecs
from rlm_core.exceptions import (
    ConfigurationError,
    PluginError,
    UnknownBackendError,
    UnknownEnvironmentError,
)
from rlm_core.pricing import ModelPrice

ENVIRONMENT_GROUP = "rlm.environments"
BACKEND_GROUP = "rlm.backends"
ALLOW_LIST_VAR = "RLM_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rlm_core.environments.builtin",
    "rlm_core.backends.builtin",
)
"""Modules registered in-process at start-up; they hold the built-in hookimpls."""

PROVIDER_DISTRIBUTIONS: dict[str, str] = {
    "ipython": "rlm-ipython",
    "bwrap": "rlm-bwrap",
    "modal": "rlm-modal",
    "e2b": "rlm-e2b",
    "daytona": "rlm-daytona",
    "prime": "rlm-prime",
    "docker": "rlm-docker",
}
"""Environment names of the known provider plugins and the distribution to install."""

NOT_YET_BUILT: dict[str, dict[str, str]] = {
    ENVIRONMENT_GROUP: {},
    BACKEND_GROUP: {},
}
"""Names ``rlms`` has that rlm-core does not provide yet, with what to do instead."""


@dataclass
class Registration:
    """One registered environment or backend."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        """Capabilities an environment has with its default settings (a setting may add
        one: a provider whose egress is off by default claims ``network_off``); the
        class's own when it cannot be built without arguments (empty for backends).
        Building an environment starts nothing."""
        caps: frozenset[str] = getattr(self.factory, "capabilities", frozenset())
        if isinstance(self.factory, type):
            # One that needs settings to be built is listed with its class's claims.
            with contextlib.suppress(Exception):
                caps = self.factory().capabilities
        return frozenset(caps)


@dataclass
class _Group:
    group: str
    hook_name: str
    unknown_error: type[PluginError]
    kind: str
    entries: dict[str, Registration] = field(default_factory=dict)


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_VAR)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


class PluginRegistry:
    """Owns the :class:`pluggy.PluginManager` and the name -> implementation tables."""

    def __init__(self, *, load_defaults: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._groups = {
            ENVIRONMENT_GROUP: _Group(
                ENVIRONMENT_GROUP,
                "rlm_register_environments",
                UnknownEnvironmentError,
                "environment",
            ),
            BACKEND_GROUP: _Group(
                BACKEND_GROUP, "rlm_register_backends", UnknownBackendError, "backend"
            ),
        }
        self._loaded_entry_points: set[tuple[str, str]] = set()
        self._dist: dict[str, tuple[str | None, str | None]] = {}
        self._prices: dict[str, tuple[str, ModelPrice]] = {}
        self._price_view: Mapping[str, ModelPrice] = {}
        if load_defaults:
            for module_name in DEFAULT_PLUGINS:
                self.register(importlib.import_module(module_name), name=module_name)

    # -- registration -------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (module or instance) and collect what it registers."""
        with self._lock:
            plugin_name = self.pm.register(plugin, name=name)
            if plugin_name is None:  # blocked
                raise PluginError(f"plugin {name!r} is blocked")
            self.pm.check_pending()
            self._collect(plugin, plugin_name)
            return plugin_name

    def unregister(self, name: str) -> None:
        """Remove a plugin and everything it registered (used by tests)."""
        with self._lock:
            self.pm.unregister(name=name)
            for group in self._groups.values():
                for key in [k for k, r in group.entries.items() if r.plugin == name]:
                    del group.entries[key]
            self._prices = {m: v for m, v in self._prices.items() if v[0] != name}
            self._price_view = {m: price for m, (_, price) in self._prices.items()}

    def _collect(self, plugin: object, plugin_name: str) -> None:
        dist, version = self._dist.get(plugin_name, (None, None))
        for group in self._groups.values():
            hook = getattr(plugin, group.hook_name, None)
            if hook is None:
                continue

            def register(name: str, factory: Callable[..., Any], _g: _Group = group) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {plugin_name!r} registered an empty name")
                existing = _g.entries.get(name)
                if existing is not None and existing.plugin != plugin_name:
                    raise PluginError(
                        f"{_g.kind} {name!r} is registered by both {existing.plugin!r} "
                        f"and {plugin_name!r}"
                    )
                _g.entries[name] = Registration(name, factory, plugin_name, dist, version)

            hook(register=register)
        self._collect_prices(plugin, plugin_name)

    def _collect_prices(self, plugin: object, plugin_name: str) -> None:
        hook = getattr(plugin, "rlm_register_prices", None)
        if hook is None:
            return

        def register(model: str, price: ModelPrice | Mapping[str, Any]) -> None:
            if not isinstance(model, str) or not model.strip():
                raise PluginError(f"plugin {plugin_name!r} registered a price without a model")
            try:
                parsed = ModelPrice.parse(model, price)
            except ConfigurationError as exc:
                raise PluginError(f"plugin {plugin_name!r}: {exc}") from exc
            key = model.strip().lower()
            existing = self._prices.get(key)
            if existing is not None and existing[0] != plugin_name:
                if existing[1] == parsed:
                    return
                raise PluginError(
                    f"the price of {model!r} is registered differently by both "
                    f"{existing[0]!r} and {plugin_name!r}"
                )
            self._prices[key] = (plugin_name, parsed)

        try:
            hook(register=register)
        finally:
            self._price_view = {m: price for m, (_, price) in self._prices.items()}

    def prices(self) -> Mapping[str, ModelPrice]:
        """Model prices registered by plugins (lower-cased model name -> price)."""
        return self._price_view

    # -- entry points -------------------------------------------------------------------

    def _entry_points(self, group: str, name: str | None = None) -> list[metadata.EntryPoint]:
        eps = metadata.entry_points(group=group)
        return [ep for ep in eps if name is None or ep.name == name]

    @staticmethod
    def is_allowed(ep: metadata.EntryPoint) -> bool:
        """Whether ``RLM_LOAD_PLUGINS`` lets this entry point load."""
        allowed = _allow_list()
        return allowed is None or ep.name in allowed or _dist_of(ep)[0] in allowed

    def _load_entry_point(self, group: str, ep: metadata.EntryPoint) -> None:
        key = (group, ep.name)
        if key in self._loaded_entry_points:
            return
        dist, version = _dist_of(ep)
        if not self.is_allowed(ep):
            raise PluginError(
                f"{self._groups[group].kind} plugin {ep.name!r} (from {dist or 'unknown'}) "
                f"is installed but not allowed by {ALLOW_LIST_VAR}="
                f"{os.environ.get(ALLOW_LIST_VAR)!r}; add {ep.name!r} to it"
            )
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginError(
                f"could not load {self._groups[group].kind} plugin {ep.name!r} "
                f"({ep.value}) from {dist or 'unknown distribution'}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        plugin_name = f"{group}:{ep.name}"
        self._dist[plugin_name] = (dist, version)
        self._loaded_entry_points.add(key)
        if self.pm.is_registered(module):
            # One module may serve several entry points; collect again for this dist.
            self._collect(module, self.pm.get_name(module) or plugin_name)
        else:
            self.register(module, name=plugin_name)

    def _lookup(self, group_name: str, name: str) -> Registration:
        group = self._groups[group_name]
        with self._lock:
            if name not in group.entries:
                for ep in self._entry_points(group_name, name):
                    self._load_entry_point(group_name, ep)
            found = group.entries.get(name)
        if found is None:
            raise self._unknown(group, name)
        return found

    def _unknown(self, group: _Group, name: str) -> PluginError:
        installed = sorted(set(group.entries) | {ep.name for ep in self._entry_points(group.group)})
        message = f"unknown {group.kind} {name!r}; installed: {', '.join(installed) or 'none'}."
        hint = NOT_YET_BUILT[group.group].get(name)
        if group.group == ENVIRONMENT_GROUP and name in PROVIDER_DISTRIBUTIONS:
            dist = PROVIDER_DISTRIBUTIONS[name]
            message += f" The {name!r} environment is provided by {dist}: pip install {dist}"
        elif hint is not None:
            message += f" {name!r} is an rlms {group.kind} not built into rlm-core yet; {hint}."
        return group.unknown_error(message)

    def _all(self, group_name: str) -> list[Registration]:
        with self._lock:
            for ep in self._entry_points(group_name):
                if ep.name not in self._groups[group_name].entries and self.is_allowed(ep):
                    self._load_entry_point(group_name, ep)
            return sorted(self._groups[group_name].entries.values(), key=lambda r: r.name)

    # -- public lookups -----------------------------------------------------------------

    def environment(self, name: str) -> Registration:
        """The environment registered as ``name``, loading its entry point if needed."""
        return self._lookup(ENVIRONMENT_GROUP, name)

    def backend(self, name: str) -> Registration:
        """The backend registered as ``name``, loading its entry point if needed."""
        return self._lookup(BACKEND_GROUP, name)

    def environments(self) -> list[Registration]:
        """Every environment: built-ins plus every installed entry point that
        ``RLM_LOAD_PLUGINS`` allows (the others are skipped, not loaded)."""
        return self._all(ENVIRONMENT_GROUP)

    def backends(self) -> list[Registration]:
        """Every backend: built-ins plus every allowed installed entry point."""
        return self._all(BACKEND_GROUP)

    def entry_point_names(self, group: str) -> Iterable[str]:
        """Names of the installed entry points of ``group`` (nothing is imported)."""
        return [ep.name for ep in self._entry_points(group)]

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``registry.hook.rlm_after_cell(...)``)."""
        return self.pm.hook


_registry: PluginRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide registry, created on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = PluginRegistry()
    return _registry


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide :class:`pluggy.PluginManager` (for registering event plugins)."""
    return get_registry().pm
