"""Run configurations: what ``rlm eval`` runs every task under, written as TOML.

    name = "gpt-4o-mini-rlm"        # default: the file's name
    mode = "rlm"                    # or "plain": one LM call with the whole context
    backend = "openai"
    model = "gpt-4o-mini"           # short for backend_kwargs.model_name
    environment = "local"
    max_depth = 1
    max_iterations = 20
    max_timeout = 300
    rate_limit = 5                  # requests per second toward this provider, shared
    [backend_kwargs]
    base_url = "http://localhost:8000/v1"

Every other key is an argument of :class:`rlm_core.RLM` that is plain data (budgets,
``environment_kwargs``, ``other_backends``, ``sampling_args``, ...). ``backend = "scripted"``
without ``responses`` uses :func:`rlm_core.eval.scripted.solver`, a stand-in LM that solves
the bundled suites with code; ``responses`` may name another function as
``"module:function"``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlm_core.eval.ratelimit import limited, provider_key
from rlm_core.eval.references import is_reference, load_object
from rlm_core.exceptions import ConfigurationError

MODES = ("rlm", "plain")
STAND_IN = "rlm_core.eval.scripted:solver"
"""The scripted stand-in LM used when a ``scripted`` configuration names no replies."""

RLM_ARGUMENTS = (
    "environment",
    "environment_kwargs",
    "max_depth",
    "max_iterations",
    "max_budget",
    "max_timeout",
    "max_tokens",
    "max_errors",
    "custom_system_prompt",
    "other_backends",
    "other_backend_kwargs",
    "compaction",
    "compaction_threshold_pct",
    "max_concurrent_subcalls",
    "sampling_args",
    "sub_sampling_args",
    "orchestrator",
    "user_prologue",
)
"""Arguments of :class:`rlm_core.RLM` a configuration may set besides the backend."""

KEYS = ("name", "mode", "backend", "backend_kwargs", "model", "rate_limit", "rate_burst")


@dataclass(frozen=True)
class RunConfig:
    """One configuration: an RLM (or, with ``mode="plain"``, the same model called once
    with the whole context in its prompt) and an optional shared request rate."""

    name: str
    backend: str = "openai"
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    mode: str = "rlm"
    rlm_kwargs: dict[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None
    rate_burst: float | None = None

    @property
    def provider(self) -> str:
        """The key of this configuration's rate limiter (backend and base URL)."""
        return provider_key(self.backend, self.backend_kwargs)

    def plain(self) -> RunConfig:
        """The baseline of this configuration: the same model without the REPL."""
        return replace(self, name=f"{self.name}-plain", mode="plain")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as data (for the run's ``configs.json``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "backend": self.backend,
            "backend_kwargs": self.backend_kwargs,
            **self.rlm_kwargs,
        }
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit
        if self.rate_burst is not None:
            out["rate_burst"] = self.rate_burst
        return out

    def fingerprint(self) -> str:
        """A hash of everything that changes results (not the rate limit)."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("rate_limit", "rate_burst")}
        text = json.dumps(data, sort_keys=True, default=_stable)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with API keys, tokens and passwords left out (for files)."""
        redacted: dict[str, Any] = _redact(self.to_dict())
        return redacted

    def rlm_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :class:`rlm_core.RLM` (stand-in replies resolved, calls
        routed through the rate limiter when one is set). ``mode="plain"`` sets
        ``max_depth=0``: the RLM is then one LM call."""
        backend, kwargs = self.backend, resolve_replies(self.backend, self.backend_kwargs)
        others = self.rlm_kwargs.get("other_backends")
        other_kwargs = self.rlm_kwargs.get("other_backend_kwargs")
        arguments = dict(self.rlm_kwargs)
        if others:
            resolved = [
                resolve_replies(name, dict(kw or {}))
                for name, kw in zip(others, other_kwargs or [{}] * len(others), strict=False)
            ]
            if self.rate_limit is not None:
                pairs = [limited(name, kw) for name, kw in zip(others, resolved, strict=False)]
                arguments["other_backends"] = [p[0] for p in pairs]
                arguments["other_backend_kwargs"] = [p[1] for p in pairs]
            else:
                arguments["other_backend_kwargs"] = resolved
        if self.rate_limit is not None:
            backend, kwargs = limited(backend, kwargs)
        if self.mode == "plain":
            arguments["max_depth"] = 0
        return {"backend": backend, "backend_kwargs": kwargs, **arguments}


def _is_secret(key: str) -> bool:
    low = key.lower().replace("-", "_")
    words = ("api_key", "apikey", "secret", "password", "credential", "authorization")
    return any(w in low for w in words) or low in ("key", "token") or low.endswith("_token")


def _stable(value: Any) -> str:
    """A JSON stand-in for a value that is not data (the same in every process)."""
    if callable(value):
        module = getattr(value, "__module__", "") or ""
        return f"{module}:{getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): "<redacted>" if _is_secret(str(k)) else _redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _stable(value)


def resolve_replies(backend: str, backend_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``backend_kwargs`` with a ``scripted`` backend's ``responses`` reference imported
    (the stand-in solver when none is given)."""
    kwargs = dict(backend_kwargs)
    if backend != "scripted":
        return kwargs
    responses = kwargs.get("responses", STAND_IN)
    if is_reference(responses):
        responses = load_object(responses, "scripted responses")
    kwargs["responses"] = responses
    return kwargs


def _number(where: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{where}: {key} must be a number greater than 0, not {value!r}")
    return float(value)


def config_from_dict(data: Mapping[str, Any], default_name: str, where: str) -> RunConfig:
    """Validate a configuration given as data (a parsed TOML file, or a dict)."""
    known = KEYS + RLM_ARGUMENTS
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"{where}: unknown configuration key {key!r}{hint}")
    mode = data.get("mode", "rlm")
    if mode not in MODES:
        raise ConfigurationError(f"{where}: mode must be 'rlm' or 'plain', not {mode!r}")
    backend_kwargs = data.get("backend_kwargs") or {}
    if not isinstance(backend_kwargs, Mapping):
        raise ConfigurationError(f"{where}: backend_kwargs must be a table")
    backend_kwargs = dict(backend_kwargs)
    if data.get("model") is not None:
        backend_kwargs["model_name"] = str(data["model"])
    name = str(data.get("name") or default_name)
    if not name or any(c in name for c in "/\\\t\n"):
        raise ConfigurationError(f"{where}: name {name!r} must be non-empty, without slashes")
    return RunConfig(
        name=name,
        backend=str(data.get("backend", "openai")),
        backend_kwargs=backend_kwargs,
        mode=str(mode),
        rlm_kwargs={k: data[k] for k in RLM_ARGUMENTS if k in data},
        rate_limit=_number(where, "rate_limit", data.get("rate_limit")),
        rate_burst=_number(where, "rate_burst", data.get("rate_burst")),
    )


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML configuration; its name defaults to the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read configuration {path}: {exc.strerror or exc}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, path.stem, str(path))


def check(config: RunConfig) -> None:
    """Construct the configuration's RLM and backend once, so a wrong argument, an unknown
    backend or environment or a missing API key is reported before any task runs."""
    from rlm_core.plugins import get_registry
    from rlm_core.rlm import RLM

    arguments = config.rlm_arguments()
    RLM(**arguments).close()
    kwargs = resolve_replies(config.backend, config.backend_kwargs)
    get_registry().backend(config.backend).factory(**kwargs).close()


def check_unique_names(configs: list[RunConfig]) -> None:
    """:class:`ConfigurationError` when two configurations share a name."""
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ConfigurationError(
                f"two configurations are named {config.name!r}; give each its own name"
            )
        seen.add(config.name)
