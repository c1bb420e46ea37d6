"""Model prices, and the cost of an LM call computed from its token usage.

Prices are USD per million tokens. They come from three places, the later overriding the
earlier for the same model name:

1. the table shipped with rlm-core (``prices.json`` in this package, loaded on first use;
   :func:`table_info` says when it was compiled);
2. plugins, through the ``rlm_register_prices(register)`` hook;
3. :func:`register_prices`, for the whole process.

A model name is looked up (:func:`model_keys`) lower-cased as given, then without a
provider prefix (``openai/gpt-4o`` -> ``gpt-4o``), then without a date or ``-latest``
suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``, ``claude-3-5-haiku-20241022`` ->
``claude-3-5-haiku``, ``claude-3-5-haiku@20241022``); the first name found in any source
wins, so a dated snapshot priced on its own keeps its price. Nothing else is tried: a model
not found has no price (``None``), never a guessed one.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from rlm_core.backends.base import LMUsage
from rlm_core.exceptions import ConfigurationError

__all__ = [
    "ModelPrice",
    "lookup_price",
    "model_keys",
    "price_call",
    "register_prices",
    "shipped_prices",
    "table_info",
    "unregister_prices",
]

PER_TOKENS = 1_000_000
"""Prices are per this many tokens."""

_RATE_KEYS = ("input", "output", "cached_input", "cache_write")
_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest)$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of one model.

    ``cached_input`` (prompt tokens read from the provider's cache) and ``cache_write``
    (prompt tokens written to it) are billed at ``input`` when ``None``. ``long_context``
    is ``(above, price)``: a call whose prompt has more than ``above`` tokens is billed
    entirely at ``price``.
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    long_context: tuple[int, ModelPrice] | None = None

    def cost(self, usage: LMUsage) -> float:
        """USD cost of one call with ``usage`` (``input_tokens`` include cached and
        written tokens)."""
        rates = self
        if self.long_context is not None and usage.input_tokens > self.long_context[0]:
            rates = self.long_context[1]
        cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
        written = min(max(usage.cache_write_tokens, 0), usage.input_tokens - cached)
        fresh = usage.input_tokens - cached - written
        total = (
            fresh * rates.input
            + cached * (rates.input if rates.cached_input is None else rates.cached_input)
            + written * (rates.input if rates.cache_write is None else rates.cache_write)
            + usage.output_tokens * rates.output
        )
        return total / PER_TOKENS

    @classmethod
    def parse(cls, model: str, value: ModelPrice | Mapping[str, Any]) -> ModelPrice:
        """A :class:`ModelPrice` from itself or a mapping such as ``{"input": 2.5,
        "output": 10, "cached_input": 1.25}``; :class:`ConfigurationError` when invalid."""
        if isinstance(value, ModelPrice):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"price of {model!r} must be a ModelPrice or a mapping, not {type(value).__name__}"
            )
        allowed = (*_RATE_KEYS, "long_context")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigurationError(
                f"price of {model!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        rates = {key: _rate(model, key, value.get(key)) for key in _RATE_KEYS}
        if rates["input"] is None or rates["output"] is None:
            raise ConfigurationError(f"price of {model!r} needs both 'input' and 'output'")
        long_context = value.get("long_context")
        tier = None if long_context is None else _long_context(model, long_context)
        return cls(
            input=rates["input"],
            output=rates["output"],
            cached_input=rates["cached_input"],
            cache_write=rates["cache_write"],
            long_context=tier,
        )


def _rate(model: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(
            f"price of {model!r}: {key!r} must be a number >= 0 (USD per million tokens), "
            f"not {value!r}"
        )
    return float(value)


def _long_context(model: str, value: Any) -> tuple[int, ModelPrice]:
    if not isinstance(value, Mapping) or "above" not in value:
        raise ConfigurationError(
            f"price of {model!r}: 'long_context' must be a mapping with 'above' (prompt "
            "tokens) and the rates above it"
        )
    above = value["above"]
    if isinstance(above, bool) or not isinstance(above, int) or above < 1:
        raise ConfigurationError(
            f"price of {model!r}: long_context 'above' must be an int >= 1, not {above!r}"
        )
    rates = {k: v for k, v in value.items() if k != "above"}
    if "long_context" in rates:
        raise ConfigurationError(f"price of {model!r}: long_context cannot nest")
    return above, ModelPrice.parse(model, rates)


def model_keys(model: str) -> list[str]:
    """The names :func:`lookup_price` tries for ``model``, in order (see the module doc)."""
    name = model.strip().lower()
    names = [name, name.rsplit("/", 1)[-1]]
    names += [_SUFFIX.sub("", n) for n in names]
    return [n for i, n in enumerate(names) if n and n not in names[:i]]


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files(__name__).joinpath("prices.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.lru_cache(maxsize=1)
def shipped_prices() -> dict[str, ModelPrice]:
    """The shipped table: model name -> price (loaded on first use)."""
    prices: dict[str, ModelPrice] = {}
    for models in _table()["models"].values():
        for model, value in models.items():
            prices[model] = ModelPrice.parse(model, value)
    return prices


def table_info() -> dict[str, Any]:
    """When the shipped table was compiled, its currency, unit, notes and sources."""
    return {k: v for k, v in _table().items() if k != "models"}


_registered: dict[str, ModelPrice] = {}
_registered_lock = threading.Lock()


def register_prices(prices: Mapping[str, ModelPrice | Mapping[str, Any]]) -> None:
    """Set the prices of models for this process, over the shipped table and plugins.

    ``prices`` maps a model name to a :class:`ModelPrice` or a mapping with ``input``
    and ``output`` (USD per million tokens) and optionally ``cached_input``,
    ``cache_write`` and ``long_context``. Registering a model again replaces its price;
    a price of ``{"input": 0, "output": 0}`` makes a self-hosted model free (and
    ``max_budget`` usable with it). Raises :class:`ConfigurationError` for an invalid price.
    """
    parsed = {_key(model): ModelPrice.parse(model, value) for model, value in prices.items()}
    global _registered
    with _registered_lock:
        _registered = {**_registered, **parsed}


def unregister_prices(*models: str) -> None:
    """Forget prices set by :func:`register_prices` for ``models``."""
    global _registered
    with _registered_lock:
        gone = {_key(model) for model in models}
        _registered = {k: v for k, v in _registered.items() if k not in gone}


def _key(model: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"a model name must be a non-empty str, not {model!r}")
    return model.strip().lower()


_get_registry: Callable[[], Any] | None = None


def _plugin_prices() -> Mapping[str, ModelPrice]:
    global _get_registry
    if _get_registry is None:  # imported on first use: the plugin machinery imports this
        from rlm_core.plugins import get_registry

        _get_registry = get_registry
    prices: Mapping[str, ModelPrice] = _get_registry().prices()
    return prices


_found: tuple[object, object, dict[str, ModelPrice | None]] = (None, None, {})
"""Prices looked up so far, valid while the user's and the plugins' prices are the same
objects (both are replaced, never changed in place, when a price is set)."""


def lookup_price(model: str) -> ModelPrice | None:
    """The price of ``model`` (see the module doc for the order), or ``None``."""
    global _found
    registered, plugins = _registered, _plugin_prices()
    seen_registered, seen_plugins, found = _found
    if seen_registered is not registered or seen_plugins is not plugins:
        found = {}
        _found = (registered, plugins, found)
    if model in found:
        return found[model]
    price = None
    sources = (registered, plugins, shipped_prices())
    for name in model_keys(model):
        price = next((p for p in (source.get(name) for source in sources) if p is not None), None)
        if price is not None:
            break
    found[model] = price
    return price


def price_call(model: str, usage: LMUsage) -> float | None:
    """USD cost of one call: the backend-reported ``usage.cost`` when present, else the
    cost at ``model``'s price, else ``None`` (unknown)."""
    if usage.cost is not None:
        return usage.cost
    price = lookup_price(model)
    return None if price is None else price.cost(usage)
