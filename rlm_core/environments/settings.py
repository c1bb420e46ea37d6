"""Environment settings: the typed keyword parameters of an environment's ``__init__``.

An environment's settings are the keyword parameters of its ``__init__`` (and of the
``__init__`` of each base class it forwards ``**kwargs`` to), typed by their annotations.
Unknown names and wrong types are refused before ``__init__`` runs (with a did-you-mean
hint, and, for a well-known setting that needs a capability the environment lacks, why it is
missing: see :data:`SETTING_CAPABILITIES`); each ``__init__`` checks the ranges of its own
settings.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from rlm_core.exceptions import ConfigurationError
from rlm_core.vocabulary import MEMORY_LIMIT, TIMEOUT


@dataclass(frozen=True)
class Setting:
    """One declared setting: a keyword parameter of an environment's ``__init__``."""

    name: str
    annotation: Any = Any
    """The resolved type hint (``typing.Any`` when the parameter has none)."""
    default: Any = inspect.Parameter.empty
    """The default value; ``inspect.Parameter.empty`` for a setting that must be given."""

    @property
    def required(self) -> bool:
        """Whether the setting has no default."""
        return self.default is inspect.Parameter.empty

    @property
    def type_name(self) -> str:
        """The expected type, as written in messages and docs (``"float | None"``)."""
        return describe_type(self.annotation)

    def check(self, value: Any, environment: str) -> None:
        """Raise :class:`ConfigurationError` when ``value`` is not of the declared type."""
        if not matches_type(value, self.annotation):
            raise ConfigurationError(
                f"the {environment} environment's setting {self.name} must be "
                f"{self.type_name}, not {type(value).__name__} ({_shorten(value)})"
            )


def _shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_type(hint: Any) -> str:
    """A type hint as a short readable string: ``float | None``, ``dict[str, str]``."""
    if hint is Any or hint is inspect.Parameter.empty:
        return "any value"
    if hint is None or hint is type(None):
        return "None"
    if hint is Ellipsis:
        return "..."
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        return describe_type(args[0])
    if origin is Union or origin is types.UnionType:
        return " | ".join(describe_type(arm) for arm in args)
    if origin is Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(describe_type(arg) for arg in args)}]" if args else name
    if isinstance(hint, type):
        return hint.__name__
    return str(hint)


def matches_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type hint ``hint``.

    ``bool`` never passes for ``int`` or ``float``; ``int`` passes for ``float``. Items of
    dicts, lists, sets and tuples are checked against their parameters. Hints that cannot
    be checked at run time (type variables, protocols, unresolved names) accept anything.
    """
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        return matches_type(value, args[0])
    if origin is Union or origin is types.UnionType:
        return any(matches_type(value, arm) for arm in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is not None:
        return _matches_generic(value, origin, args)
    if isinstance(hint, type):
        try:
            return isinstance(value, hint)
        except TypeError:  # e.g. a protocol that is not runtime-checkable
            return True
    return True


def _matches_generic(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if not isinstance(origin, type):
        return True
    try:
        if not isinstance(value, origin):
            return False
    except TypeError:
        return True
    if not args or isinstance(value, str | bytes):
        return True
    if isinstance(value, Mapping) and len(args) == 2:
        return all(matches_type(k, args[0]) and matches_type(v, args[1]) for k, v in value.items())
    if isinstance(value, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches_type(item, args[0]) for item in value)
        return len(args) == len(value) and all(map(matches_type, value, args))
    if isinstance(value, list | set | frozenset) and len(args) == 1:
        return all(matches_type(item, args[0]) for item in value)
    return True


def _annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``fn``; one that cannot be resolved becomes ``Any``."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    raw = getattr(fn, "__annotations__", None) or {}
    namespace = getattr(fn, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns=namespace, include_extras=True)[
                name
            ]
        except Exception:
            hints[name] = Any
    return hints


def _parameters(fn: Callable[..., Any], skip_first: bool) -> tuple[list[Setting], bool]:
    """The keyword-passable parameters of ``fn`` as settings, and whether it takes
    ``**kwargs``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    hints = _annotations(fn)
    params = list(signature.parameters.values())
    if skip_first and params and params[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        params = params[1:]
    named = [
        Setting(p.name, hints.get(p.name, Any), p.default)
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


_declarations: weakref.WeakKeyDictionary[Any, tuple[dict[str, Setting], bool]] = (
    weakref.WeakKeyDictionary()
)


def _declaration(factory: Callable[..., Any]) -> tuple[dict[str, Setting], bool]:
    """``(settings, open)``: the settings ``factory`` declares, and whether it may accept
    names beyond them (a plain ``**kwargs`` whose use cannot be seen)."""
    try:
        cached = _declarations.get(factory)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    settings: dict[str, Setting] = {}
    accepts_more = False
    if isinstance(factory, type):
        seen_init = False
        for klass in factory.__mro__:
            if vars(klass).get("_takes_no_settings") or klass is object:
                # Environment refuses what reaches it; object.__init__ takes nothing, and a
                # plain class forwarding **kwargs to it may use them on the way.
                accepts_more = klass is object and seen_init
                break
            init = vars(klass).get("__init__")
            if init is None:
                continue
            seen_init = True
            named, forwards = _parameters(init, skip_first=True)
            for setting in named:
                settings.setdefault(setting.name, setting)
            if not forwards:
                break
    else:
        named, accepts_more = _parameters(factory, skip_first=False)
        settings = {setting.name: setting for setting in named}
    result = (settings, accepts_more)
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _declarations[factory] = result
    return result


def declared_settings(factory: Callable[..., Any]) -> dict[str, Setting]:
    """The settings an environment class (or factory function) declares, by name."""
    return dict(_declaration(factory)[0])


def environment_name(factory: Callable[..., Any]) -> str:
    name = getattr(factory, "name", "")
    if isinstance(name, str) and name:
        return repr(name)
    return str(getattr(factory, "__name__", type(factory).__name__))


@dataclass(frozen=True)
class CapabilityNote:
    """What a capability gives, and the built-in environments with it that messages
    suggest (the ones meant for users, not test stand-ins)."""

    meaning: str
    builtin_environments: tuple[str, ...]

    def builtins_with_it(self) -> str:
        """``"the built-in environment 'subprocess' has it"`` (empty when none has it)."""
        listed = ", ".join(map(repr, self.builtin_environments))
        if len(self.builtin_environments) == 1:
            return f"the built-in environment {listed} has it"
        return f"the built-in environments {listed} have it" if listed else ""


CAPABILITY_NOTES: Mapping[str, CapabilityNote] = types.MappingProxyType(
    {
        TIMEOUT: CapabilityNote("a running cell can be interrupted", ("subprocess",)),
        MEMORY_LIMIT: CapabilityNote("a cell's memory can be limited", ("subprocess",)),
    }
)
"""What the capabilities that settings need (:data:`SETTING_CAPABILITIES`) give."""

SETTING_CAPABILITIES: Mapping[str, str] = types.MappingProxyType(
    {"cell_timeout": TIMEOUT, "interrupt_grace": TIMEOUT, "memory_limit_mb": MEMORY_LIMIT}
)
"""Well-known setting names and the capability an environment needs to offer them. Every
built-in environment with the capability takes the setting (the agent-backed ones do); one
without it refuses the setting with this reason and the built-in environments that have it."""


def _lacking_capability(keys: list[str], capability: str, environment: str) -> str:
    names = " and ".join(keys)
    verb = "needs" if len(keys) == 1 else "need"
    note = CAPABILITY_NOTES.get(capability)
    meaning = f" ({note.meaning})" if note else ""
    message = (
        f"{names} {verb} the {capability!r} capability{meaning}, which the {environment} "
        "environment does not have"
    )
    builtins = note.builtins_with_it() if note else ""
    return message + (f"; {builtins}." if builtins else ".")


def unknown_settings_message(
    environment: str,
    unknown: Iterable[Any],
    valid: Iterable[str],
    capabilities: Iterable[str] = (),
) -> str:
    """The message for ``unknown`` settings of ``environment``: each with a did-you-mean
    hint when one is close, why a well-known setting is missing when the environment lacks
    (per its ``capabilities``) the capability it needs, and the valid settings."""
    choices = sorted(valid)
    has = frozenset(capabilities)
    described = []
    lacking: dict[str, list[str]] = {}
    for key in unknown:
        close = difflib.get_close_matches(str(key), choices, n=1)
        described.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        needed = SETTING_CAPABILITIES.get(key) if isinstance(key, str) else None
        if needed is not None and needed not in has:
            lacking.setdefault(needed, []).append(key)
    noun = "setting" if len(described) == 1 else "settings"
    message = f"unknown {noun} {', '.join(described)} for the {environment} environment. "
    for capability, keys in lacking.items():
        message += _lacking_capability(keys, capability, environment) + " "
    if choices:
        return message + f"Valid settings: {', '.join(choices)}."
    return message + (f"The {environment} environment" if lacking else "It") + " takes no settings."


def check_environment_settings(
    factory: Callable[..., Any],
    given: Mapping[str, Any],
    environment: str | None = None,
    *,
    extra: Iterable[Setting] = (),
    complete: bool = False,
) -> None:
    """Check ``given`` settings against what ``factory`` declares (plus ``extra``).

    Raises :class:`ConfigurationError` for an unknown name (with a did-you-mean hint and
    the valid names), a value of the wrong type and, with ``complete``, a required setting
    that is missing. Ranges are checked by the environment's ``__init__``.
    """
    declared, accepts_more = _declaration(factory)
    settings = {**declared, **{setting.name: setting for setting in extra}}
    name = repr(environment) if environment else environment_name(factory)
    unknown = [key for key in given if key not in settings]
    if unknown and not accepts_more:
        capabilities = getattr(factory, "capabilities", None) or ()
        raise ConfigurationError(unknown_settings_message(name, unknown, settings, capabilities))
    for key, value in given.items():
        setting = settings.get(key)
        if setting is not None:
            setting.check(value, name)
    if complete:
        missing = [s for s in settings.values() if s.required and s.name not in given]
        if missing:
            listed = ", ".join(f"{s.name} ({s.type_name})" for s in missing)
            raise ConfigurationError(f"the {name} environment needs the settings: {listed}")


def given_settings(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings of a constructor call, positional ones named after ``__init__``."""
    if not args:
        return kwargs
    init = next(vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k))
    try:
        signature = inspect.signature(init)
        bound = signature.bind_partial(None, *args)
    except (TypeError, ValueError):
        return kwargs  # __init__ reports the bad call itself
    params = list(signature.parameters.values())
    named = {
        p.name: bound.arguments[p.name]
        for p in params[1:]
        if p.name in bound.arguments
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return {**named, **kwargs}
