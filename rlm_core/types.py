"""Result and record types shared by the RLM loop, environments, backends and logs.

Field names and ``to_dict`` shapes match the reference ``rlms`` package so that code and
log readers written for it keep working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from rlm_core.exceptions import ContextError

Prompt = str | list[dict[str, Any]] | dict[str, Any]
"""What a completion accepts: a string, a list of chat messages, or a dict/list context."""

Messages = list[dict[str, Any]]
"""A chat transcript: ``[{"role": ..., "content": ...}, ...]``."""


def serialize_value(value: Any) -> Any:
    """Return a JSON-compatible rendering of ``value`` for logs."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ModuleType):
        return f"<module '{value.__name__}'>"
    if isinstance(value, list | tuple):
        return [serialize_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): serialize_value(v) for k, v in value.items()}
    if callable(value):
        return f"<{type(value).__name__} '{getattr(value, '__name__', repr(value))}'>"
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


@dataclass
class ModelUsageSummary:
    """Calls, tokens and cost spent on one model.

    ``total_input_tokens`` include ``total_cached_input_tokens`` (read from the provider's
    prompt cache) and ``total_cache_write_tokens`` (written to it). ``total_cost`` is USD
    when every call's cost is known, else ``None``; ``unpriced_calls`` counts the calls
    whose cost is unknown.
    """

    total_calls: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost: float | None = None
    total_cached_input_tokens: int = 0
    total_cache_write_tokens: int = 0
    unpriced_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` shape (``total_cost`` only when known), plus the cache
        token counts and ``unpriced_calls`` (only when some are)."""
        out: dict[str, Any] = {
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
        }
        if self.total_cost is not None:
            out["total_cost"] = self.total_cost
        out["total_cached_input_tokens"] = self.total_cached_input_tokens
        out["total_cache_write_tokens"] = self.total_cache_write_tokens
        if self.unpriced_calls:
            out["unpriced_calls"] = self.unpriced_calls
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelUsageSummary:
        """Inverse of :meth:`to_dict` (also reads the ``rlms`` shape)."""
        return cls(
            total_calls=int(data.get("total_calls", 0)),
            total_input_tokens=int(data.get("total_input_tokens", 0)),
            total_output_tokens=int(data.get("total_output_tokens", 0)),
            total_cost=data.get("total_cost"),
            total_cached_input_tokens=int(data.get("total_cached_input_tokens", 0)),
            total_cache_write_tokens=int(data.get("total_cache_write_tokens", 0)),
            unpriced_calls=int(data.get("unpriced_calls", 0)),
        )


@dataclass
class UsageSummary:
    """Usage per model name, and per depth of the recursion tree in ``by_depth``.

    Depth 0 is the root RLM's own calls; a sub-call made by a cell of an RLM at depth
    ``d``, and the own calls of a child RLM it spawns, are at depth ``d + 1``.
    """

    model_usage_summaries: dict[str, ModelUsageSummary] = field(default_factory=dict)
    by_depth: dict[int, UsageSummary] = field(default_factory=dict)

    @property
    def unpriced_models(self) -> list[str]:
        """Models some of whose calls have an unknown cost (sorted)."""
        return sorted(m for m, s in self.model_usage_summaries.items() if s.total_cost is None)

    @property
    def cost_known(self) -> bool:
        """Whether the cost of every call is known."""
        return not self.unpriced_models

    @property
    def total_cost(self) -> float | None:
        """USD over all models, or ``None`` when there were no calls or the cost of any
        call is unknown (see :attr:`unpriced_models`)."""
        if not self.model_usage_summaries or not self.cost_known:
            return None
        return sum(s.total_cost or 0.0 for s in self.model_usage_summaries.values())

    @property
    def total_input_tokens(self) -> int:
        """Prompt tokens over all models."""
        return sum(s.total_input_tokens for s in self.model_usage_summaries.values())

    @property
    def total_output_tokens(self) -> int:
        """Completion tokens over all models."""
        return sum(s.total_output_tokens for s in self.model_usage_summaries.values())

    @property
    def total_cached_input_tokens(self) -> int:
        """Prompt tokens read from a prompt cache, over all models."""
        return sum(s.total_cached_input_tokens for s in self.model_usage_summaries.values())

    @property
    def total_cache_write_tokens(self) -> int:
        """Prompt tokens written to a prompt cache, over all models."""
        return sum(s.total_cache_write_tokens for s in self.model_usage_summaries.values())

    @property
    def total_calls(self) -> int:
        """LM calls over all models."""
        return sum(s.total_calls for s in self.model_usage_summaries.values())

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` shape (``total_cost`` only when known), plus
        ``unpriced_models`` (only when some are) and ``by_depth`` (keys are depths as
        strings; only when recorded)."""
        out: dict[str, Any] = {
            "model_usage_summaries": {m: s.to_dict() for m, s in self.model_usage_summaries.items()}
        }
        if self.total_cost is not None:
            out["total_cost"] = self.total_cost
        if self.unpriced_models:
            out["unpriced_models"] = self.unpriced_models
        if self.by_depth:
            out["by_depth"] = {str(d): self.by_depth[d].to_dict() for d in sorted(self.by_depth)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageSummary:
        """Inverse of :meth:`to_dict` (also reads the ``rlms`` shape)."""
        return cls(
            {
                m: ModelUsageSummary.from_dict(s)
                for m, s in data.get("model_usage_summaries", {}).items()
            },
            {int(d): cls.from_dict(s) for d, s in (data.get("by_depth") or {}).items()},
        )


@dataclass
class RLMChatCompletion:
    """The result of ``RLM.completion`` and the record of every sub-LM call."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` shape (``metadata``/``error`` only when set)."""
        out: dict[str, Any] = {
            "root_model": self.root_model,
            "prompt": self.prompt,
            "response": self.response,
            "usage_summary": self.usage_summary.to_dict(),
            "execution_time": self.execution_time,
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMChatCompletion:
        """Inverse of :meth:`to_dict`."""
        return cls(
            root_model=data.get("root_model", ""),
            prompt=data.get("prompt"),
            response=data.get("response", ""),
            usage_summary=UsageSummary.from_dict(data.get("usage_summary") or {}),
            execution_time=float(data.get("execution_time", 0.0)),
            metadata=data.get("metadata"),
            error=data.get("error"),
        )


@dataclass
class REPLResult:
    """What one executed cell produced.

    ``stderr`` carries the traceback text when the cell raised; ``error`` is a one-line
    summary (``"ZeroDivisionError: division by zero"``) or ``None`` on success.
    ``locals`` maps each user variable to a short type description (remote environments
    cannot ship the objects themselves). ``final_answer`` is set when the cell set
    ``answer["ready"] = True``.
    """

    stdout: str = ""
    stderr: str = ""
    locals: dict[str, Any] = field(default_factory=dict)
    execution_time: float = 0.0
    rlm_calls: list[RLMChatCompletion] = field(default_factory=list)
    final_answer: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` log shape (plus ``error``)."""
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "locals": {k: serialize_value(v) for k, v in self.locals.items()},
            "execution_time": self.execution_time,
            "rlm_calls": [c.to_dict() for c in self.rlm_calls],
            "final_answer": self.final_answer,
            "error": self.error,
        }


@dataclass
class CodeBlock:
    """One ```` ```repl ```` block of a root-LM reply and its result."""

    code: str
    result: REPLResult

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` log shape."""
        return {"code": self.code, "result": self.result.to_dict()}


@dataclass
class RLMIteration:
    """One turn of the loop: the prompt, the root LM's reply and the cells it ran."""

    prompt: Any
    response: str
    code_blocks: list[CodeBlock]
    final_answer: str | None = None
    iteration_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` log shape."""
        return {
            "prompt": self.prompt,
            "response": self.response,
            "code_blocks": [b.to_dict() for b in self.code_blocks],
            "final_answer": self.final_answer,
            "iteration_time": self.iteration_time,
        }


@dataclass
class RLMMetadata:
    """The configuration of a run, logged once at its start."""

    root_model: str
    max_depth: int
    max_iterations: int
    backend: str
    backend_kwargs: dict[str, Any]
    environment_type: str
    environment_kwargs: dict[str, Any]
    other_backends: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` log shape."""
        return {
            "root_model": self.root_model,
            "max_depth": self.max_depth,
            "max_iterations": self.max_iterations,
            "backend": self.backend,
            "backend_kwargs": {k: serialize_value(v) for k, v in self.backend_kwargs.items()},
            "environment_type": self.environment_type,
            "environment_kwargs": {
                k: serialize_value(v) for k, v in self.environment_kwargs.items()
            },
            "other_backends": self.other_backends,
        }


def _length_of(chunk: Any) -> int:
    if isinstance(chunk, str):
        return len(chunk)
    try:
        return len(json.dumps(chunk, default=str))
    except (TypeError, ValueError):
        return len(repr(chunk))


@dataclass
class QueryMetadata:
    """Type and size of a context, shown to the root LM instead of the context itself."""

    context_lengths: list[int]
    context_total_length: int
    context_type: str

    @classmethod
    def of(cls, context: Any) -> QueryMetadata:
        """Describe ``context`` (str, bytes, dict, list or any JSON-able value)."""
        if isinstance(context, str | bytes):
            lengths = [len(context)]
        elif isinstance(context, dict):
            lengths = [_length_of(v) for v in context.values()] or [0]
        elif isinstance(context, list):
            if not context:
                lengths = [0]
            elif isinstance(context[0], dict) and "content" in context[0]:
                lengths = [len(str(c.get("content", ""))) for c in context]
            else:
                lengths = [_length_of(c) for c in context]
        else:
            lengths = [_length_of(context)]
        return cls(lengths, sum(lengths), type(context).__name__)


MAX_CONTEXT_DEPTH = 500
"""How deeply lists, tuples and dicts may nest inside a context (a string is depth 0,
``["a"]`` depth 1, ``[["a"]]`` depth 2). Deeper contexts cannot be described, serialised or
sent to a sandbox without exhausting Python's stack, so they are refused up front."""

_CONTAINERS = (list, tuple, dict)


def _items(container: Any) -> Iterator[Any]:
    return iter(container.values()) if isinstance(container, dict) else iter(container)


def nesting_depth_exceeds(payload: Any, limit: int) -> bool:
    """Whether lists, tuples and dicts nest more than ``limit`` levels deep in ``payload``.

    Measured without recursion, so any depth is measured safely: level by level first (fast,
    each container once per level); only when that passes ``limit`` is the payload walked
    again depth-first, so that a container that contains itself is not taken for an endlessly
    deep one.
    """
    if not isinstance(payload, _CONTAINERS):
        return False
    level: list[Any] = [payload]
    for _ in range(limit):
        below: list[Any] = []
        for container in level:
            below += [item for item in _items(container) if isinstance(item, _CONTAINERS)]
        if not below:
            return False
        level = list({id(c): c for c in below}.values()) if len(below) > 1 else below
    return _deeper_than(payload, limit)


def _deeper_than(payload: Any, limit: int) -> bool:
    """Depth-first walk that skips containers already on the path (cycles) and walks each
    container once, remembering the height below it."""
    heights: dict[int, int] = {}  # id -> height of a container walked to the end
    path: list[int] = [id(payload)]
    on_path = {id(payload)}
    walks = [_items(payload)]
    tallest = [0]  # per open container: the tallest child found so far
    while walks:
        depth = len(walks)
        if depth > limit:
            return True
        for item in walks[-1]:
            if not isinstance(item, _CONTAINERS) or id(item) in on_path:
                continue
            known = heights.get(id(item))
            if known is None:
                path.append(id(item))
                on_path.add(id(item))
                walks.append(_items(item))
                tallest.append(0)
                break
            if depth + known > limit:
                return True
            tallest[-1] = max(tallest[-1], known)
        else:
            walks.pop()
            done = path.pop()
            on_path.discard(done)
            heights[done] = tallest.pop() + 1
            if tallest:
                tallest[-1] = max(tallest[-1], heights[done])
    return False


def check_context(payload: Any, index: int = 0) -> None:
    """Raise :class:`ContextError` when context ``index`` nests deeper than
    :data:`MAX_CONTEXT_DEPTH`."""
    if nesting_depth_exceeds(payload, MAX_CONTEXT_DEPTH):
        raise ContextError(
            f"context {index} ({type(payload).__name__}) is nested more than "
            f"{MAX_CONTEXT_DEPTH} levels deep (lists, tuples and dicts inside each other); "
            f"contexts may nest at most {MAX_CONTEXT_DEPTH} levels. Flatten it, or pass it as "
            "a string (for example its JSON text)"
        )
