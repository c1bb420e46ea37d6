"""The environment contract: one interface for every sandbox a cell can run in."""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from rlm_core.environments.settings import (
    CAPABILITY_NOTES,
    SETTING_CAPABILITIES,
    CapabilityNote,
    Setting,
    check_environment_settings,
    declared_settings,
    environment_name,
    given_settings,
    unknown_settings_message,
)
from rlm_core.exceptions import ConfigurationError
from rlm_core.types import Messages, REPLResult, check_context
from rlm_core.vocabulary import (
    COMPACTION,
    DISK_LIMIT,
    FILES,
    ISOLATED,
    MEMORY_LIMIT,
    NETWORK_OFF,
    PERSISTENT,
    RECURSIVE,
    RESERVED_NAMES,
    SEPARATE_PROCESS,
    SUBCALLS,
    TIMEOUT,
    SubcallHandler,
    ToolSpec,
)

__all__ = [  # the environment contract, capability names included
    "CAPABILITY_NOTES",
    "COMPACTION",
    "DISK_LIMIT",
    "FILES",
    "ISOLATED",
    "MEMORY_LIMIT",
    "NETWORK_OFF",
    "PERSISTENT",
    "RECURSIVE",
    "RESERVED_NAMES",
    "SEPARATE_PROCESS",
    "SETTING_CAPABILITIES",
    "SUBCALLS",
    "TIMEOUT",
    "CapabilityNote",
    "Environment",
    "Session",
    "SubcallHandler",
    "ToolSpec",
    "format_tools_for_prompt",
    "parse_tools",
]


def parse_tools(custom_tools: dict[str, Any] | None) -> list[ToolSpec]:
    """Parse ``custom_tools`` (``{name: value}`` or ``{name: {"tool": v, "description": d}}``).

    Raises ``ValueError`` when a name is not an identifier, or when names are reserved (the
    message names every one of them, in ``rlms``'s words).
    """
    conflicts = sorted(RESERVED_NAMES.intersection(custom_tools or {}))
    if conflicts:
        raise ValueError(
            f"Custom tools cannot override reserved REPL functions: {conflicts}. "
            f"Reserved names: {sorted(RESERVED_NAMES)}"
        )
    tools: list[ToolSpec] = []
    for name, entry in (custom_tools or {}).items():
        if not name.isidentifier():
            raise ValueError(f"Custom tool name {name!r} is not a Python identifier")
        if isinstance(entry, dict) and "tool" in entry:
            description = entry.get("description")
            tools.append(
                ToolSpec(name, entry["tool"], description if isinstance(description, str) else None)
            )
        else:
            tools.append(ToolSpec(name, entry))
    return tools


def format_tools_for_prompt(custom_tools: dict[str, Any] | None) -> str | None:
    """Describe custom tools for the system prompt, or ``None`` when there are none."""
    lines = []
    for tool in parse_tools(custom_tools):
        if tool.description:
            lines.append(f"- `{tool.name}`: {tool.description}")
        elif tool.is_callable or tool.source is not None:
            lines.append(f"- `{tool.name}`: A custom function")
        else:
            lines.append(f"- `{tool.name}`: A custom {type(tool.value).__name__} value")
    return "\n".join(lines) or None


@dataclass
class Session:
    """What the RLM hands an environment at :meth:`Environment.start`."""

    subcalls: SubcallHandler
    depth: int = 1
    """Depth of the code running in this environment (the owning RLM's depth + 1)."""
    custom_tools: list[ToolSpec] = field(default_factory=list)
    max_concurrent_subcalls: int = 4


class Environment(ABC):
    """A sandbox with a persistent Python namespace that runs the root LM's cells.

    Lifecycle: construct with ``environment_kwargs`` -> :meth:`start` -> any number of
    :meth:`load_context` / :meth:`execute` / :meth:`get_variable` / :meth:`set_variable`
    -> :meth:`close`. The REPL names inside (``context``/``context_N``, ``llm_query``,
    ``llm_query_batched``, ``rlm_query``, ``rlm_query_batched``, ``answer``,
    ``SHOW_VARS``, ``history``) are the same in every environment.

    Settings (``environment_kwargs``) are declared as typed keyword parameters of
    ``__init__``; a subclass passes the ones it does not declare on to its base class with
    ``**kwargs``. Unknown names and wrong types raise :class:`ConfigurationError` before
    ``__init__`` runs, and ``__init__`` checks ranges with :meth:`check_range`. A
    well-known setting (:data:`SETTING_CAPABILITIES`, e.g. ``cell_timeout``) given to an
    environment without the capability it needs is refused with that reason. The
    ``RLM`` constructs its environment when it is constructed, so ``__init__`` should only
    store and check settings and leave everything that costs or holds resources to
    :meth:`start`.
    """

    name: ClassVar[str] = ""
    """The registered environment name."""

    capabilities: frozenset[str] = frozenset()
    """What this environment guarantees (see the capability constants in this module). An
    environment that claims ``timeout`` takes the settings :data:`SETTING_CAPABILITIES`
    maps to it (``cell_timeout``, ``interrupt_grace``). Declared on the class; an instance
    may add what its settings give (``memory_limit`` when a limit is set, ``network_off``
    when egress is turned off): the conformance suite reads the instance's."""

    _takes_no_settings: ClassVar[bool] = True  # the walk through __init__s stops here

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Refuse unknown settings and settings of the wrong type before ``__init__``."""
        cls.check_settings(given_settings(cls, args, kwargs))
        return super().__new__(cls)

    def __init__(self, **kwargs: Any) -> None:
        """Settings are the keyword parameters of the subclasses' ``__init__``, which pass
        the rest on here; whatever arrives here was not declared."""
        if kwargs:
            name = environment_name(type(self))
            raise ConfigurationError(
                unknown_settings_message(name, kwargs, self.settings(), self.capabilities)
            )
        self._context_count = 0
        self._history_count = 0

    # -- settings -----------------------------------------------------------------------

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """The declared settings (``environment_kwargs`` this environment accepts)."""
        return declared_settings(cls)

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigurationError` for an unknown setting or one of the wrong
        type (ranges are checked by ``__init__``)."""
        check_environment_settings(cls, settings)

    def check_range(
        self,
        setting: str,
        value: float | None,
        *,
        above: float | None = None,
        at_least: float | None = None,
        hint: str = "",
    ) -> None:
        """Raise :class:`ConfigurationError` unless ``value`` is ``None`` or a finite
        number greater than ``above`` / at least ``at_least``. ``hint`` is added to the
        message (what to use instead)."""
        if value is None:
            return
        ok = math.isfinite(value)
        if above is not None:
            ok = ok and value > above
        if at_least is not None:
            ok = ok and value >= at_least
        if ok:
            return
        bounds = []
        if above is not None:
            bounds.append(f"> {above:g}")
        if at_least is not None:
            bounds.append(f">= {at_least:g}")
        raise ConfigurationError(
            f"the {environment_name(type(self))} environment's setting {setting} must be "
            f"a finite number {' and '.join(bounds)}, not {value!r}" + (f"; {hint}" if hint else "")
        )

    # -- the contract -------------------------------------------------------------------

    @abstractmethod
    def start(self, session: Session) -> None:
        """Bring the sandbox up and bind its REPL functions to ``session``."""

    def rebind(self, session: Session) -> None:
        """Point an already started environment at a new session (persistent runs)."""
        self.start(session)

    @abstractmethod
    def load_context(self, payload: Any, index: int) -> None:
        """Make ``payload`` available as ``context_{index}`` (and ``context`` for 0).

        ``payload`` is a str, bytes, list or dict of any size the machine holds.
        """

    @abstractmethod
    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        """Run one cell in the persistent namespace and report what happened."""

    @abstractmethod
    def get_variable(self, name: str) -> Any:
        """Return a namespace variable (a copy for remote sandboxes). ``KeyError`` if unset."""

    @abstractmethod
    def set_variable(self, name: str, value: Any) -> None:
        """Bind ``name`` to ``value`` in the namespace (JSON-compatible values travel
        everywhere; local environments accept any object)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the sandbox and free everything it holds. Safe to call twice."""

    # -- behaviour shared by every environment ------------------------------------------

    def extend_variable(self, name: str, items: list[Any]) -> None:
        """Append ``items`` to the list bound to ``name`` (remote sandboxes may override
        this to send only the new items)."""
        value = self.get_variable(name)
        value.extend(items)
        self.set_variable(name, value)

    def add_context(self, payload: Any, index: int | None = None, *, checked: bool = False) -> int:
        """Load ``payload`` as the next ``context_N`` (or at ``index``); return N.

        ``ContextError`` when it nests too deeply (:func:`rlm_core.types.check_context`),
        unless the caller says it ``checked`` it already (a walk over a big list context
        is not free; the RLM checks each context once, before anything starts)."""
        if index is None:
            index = self._context_count
        if not checked:
            check_context(payload, index)
        self.load_context(payload, index)
        self._context_count = max(self._context_count, index + 1)
        return index

    def get_context_count(self) -> int:
        """How many contexts are loaded."""
        return self._context_count

    def add_history(self, messages: Messages, index: int | None = None) -> int:
        """Store a finished conversation as ``history_N`` (``history`` aliases N=0)."""
        if index is None:
            index = self._history_count
        stored = copy.deepcopy(messages)
        self.set_variable(f"history_{index}", stored)
        if index == 0:
            self.set_variable("history", stored)
        self._history_count = max(self._history_count, index + 1)
        return index

    def get_history_count(self) -> int:
        """How many conversations are stored."""
        return self._history_count

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
