"""Objects named by ``"package.module:attribute"`` references (generators, scorers, LMs)."""

from __future__ import annotations

import importlib
from typing import Any

from rlm_core.exceptions import ConfigurationError


def is_reference(value: object) -> bool:
    """Whether ``value`` looks like a ``module:attribute`` reference."""
    if not isinstance(value, str):
        return False
    module, sep, attribute = value.partition(":")
    return bool(sep and module and attribute) and " " not in value


def load_object(reference: str, what: str) -> Any:
    """Import ``"package.module:attribute"``; :class:`ConfigurationError` when it fails."""
    if not is_reference(reference):
        raise ConfigurationError(f"{what} {reference!r} is not of the form 'module:attribute'")
    module_name, _, attribute = reference.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {what} {reference!r}: {exc}") from None
    return value
