"""Result and record types shared by the RLM loop, environments, backends and logs.

Field names and ``to_dict`` shapes match the reference ``rlms`` package so that code and
log readers written for it keep working.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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


MAX_LOCAL_CHARS = 2_000
"""How many characters of a variable's value ``REPLResult.locals`` keeps; a longer value is
kept as a :class:`CappedLocal` (see :func:`describe_local`)."""

_MAX_LOCAL_DEPTH = 100
_JSON_NATIVE = (str, list, tuple, dict)
_REPR_CONTAINERS: dict[type, str] = {
    list: "[]",
    tuple: "()",
    set: "{}",
    frozenset: "{}",
    dict: "{}",
}
_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


class LocalText(str):
    """A variable's value given as text because it is not JSON-native: ``<module 'm'>`` for
    a module, ``<function 'f'>`` for a callable (``<type 'C'>`` for a class), else its
    ``repr`` (``<T>`` when that fails). It is a ``str``, and is logged as one."""

    __slots__ = ()


class CappedLocal(dict[str, Any]):
    """A variable's value too long to keep whole, ``{"capped": True, "type": ...,
    "length": ..., "prefix": ...}`` (see :func:`describe_local`)."""


def _type_name(value: Any) -> str:
    try:
        return str.__str__(type(value).__name__)
    except KeyboardInterrupt:
        raise
    except BaseException:  # a hostile metaclass
        return "object"


def _text_or_failure(render: Any, value: Any) -> str:
    """``render(value)`` as an exact ``str``, or ``<T>`` when it fails (``KeyboardInterrupt``
    propagates)."""
    try:
        text = render(value)
        return str.__getitem__(text, slice(None))
    except KeyboardInterrupt:
        raise
    except BaseException:
        return f"<{_type_name(value)}>"


def _callable_text(value: Any) -> str:
    """``<function 'f'>``, as ``rlms`` names a callable (by its ``repr`` when it has no
    ``__name__``)."""
    try:
        name = value.__name__
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = None
    if issubclass(type(name), str):
        text = str.__getitem__(name, slice(None))
    else:
        text = _text_or_failure(repr, value)
    return f"<{_type_name(value)} '{text}'>"


class _Rendering:
    """One bounded rendering of a value: ``left`` is the room still allowed, in characters
    of its JSON text (counted without escapes, so never more than the real text)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self.cut = False
        self.open: set[int] = set()
        self.foreign = False  # whether code of the value's own may have run

    def spend(self, chars: int) -> None:
        self.left -= chars
        if self.left < 0:
            self.cut = True

    def text_of(self, value: Any, room: int, depth: int) -> str | None:
        """The text a value that is not JSON-native is rendered as (at least ``room + 1``
        characters when it is longer than ``room``), or ``None`` for a JSON-native value."""
        kind = type(value)
        if value is None or kind is bool or issubclass(kind, float):
            return None
        if issubclass(kind, int):
            try:
                int.__repr__(value)
            except ValueError:  # more digits than int-to-str conversion allows
                return "<int>"
            return None
        if issubclass(kind, str):
            return None
        if issubclass(kind, _JSON_NATIVE):
            return None
        self.foreign = True
        if issubclass(kind, ModuleType):
            return _text_or_failure(lambda m: f"<module '{m.__name__}'>", value)
        if callable(value):
            return _callable_text(value)
        return self.bounded_repr(value, room, depth)

    def bounded_repr(self, value: Any, room: int, depth: int) -> str:
        """``repr(value)``; for built-in strings, bytes and containers only as much of it as
        goes past ``room`` characters."""
        kind = type(value)
        room = max(room, 0)
        if kind in (str, bytes, bytearray):
            return repr(value if len(value) <= room else value[: room + 1])
        brackets = _REPR_CONTAINERS.get(kind)
        if brackets is None:
            self.foreign = True
            return _text_or_failure(repr, value)
        if id(value) in self.open or depth >= _MAX_LOCAL_DEPTH:
            return f"{brackets[0]}...{brackets[1]}"
        self.open.add(id(value))
        parts: list[str] = []
        size = 1  # the text so far, without its closing bracket
        items = dict.items(value) if kind is dict else kind.__iter__(value)
        for item in items:
            if parts and size + 1 > room:
                break
            size += 2 if parts else 0
            if kind is dict:
                key = self.bounded_repr(item[0], room - size, depth + 1)
                part = f"{key}: {self.bounded_repr(item[1], room - size - len(key) - 2, depth + 1)}"
            else:
                part = self.bounded_repr(item, room - size, depth + 1)
            parts.append(part)
            size += len(part)
        self.open.discard(id(value))
        body = ", ".join(parts)
        if kind is tuple and len(parts) == 1:
            body += ","
        if kind in (set, frozenset):
            inner = "{" + body + "}" if parts else ""
            return f"{kind.__name__}({inner})" if kind is frozenset or not parts else inner
        return brackets[0] + body + brackets[1]

    def json(self, value: Any, depth: int) -> Any:
        """``value`` rendered as JSON, as ``rlms`` does, within the room left."""
        kind = type(value)
        if kind is str:
            return self.string(value)
        if kind in _PLAIN or (kind is int and value.bit_length() < self.limit):
            self.spend(len(repr(value)))  # as long as its JSON text (shorter for inf)
            return value
        if depth >= _MAX_LOCAL_DEPTH:
            self.spend(self.left + 1)
            return "..."
        text = self.text_of(value, max(self.left, 0), depth)
        if text is not None:
            return self.string(text)
        kind = type(value)
        if value is None or kind is bool:
            self.spend(4 if value in (None, True) else 5)
            return value
        if issubclass(kind, int | float):
            number = int.__int__(value) if issubclass(kind, int) else float.__float__(value)
            self.spend(len(repr(number)))
            return number
        if issubclass(kind, str):
            return self.string(value)
        if id(value) in self.open:
            return self.string("[...]" if issubclass(kind, list | tuple) else "{...}")
        self.open.add(id(value))
        try:
            if issubclass(kind, dict):
                return self.mapping(value, depth)
            return self.sequence(value, kind, depth)
        finally:
            self.open.discard(id(value))

    def string(self, text: str) -> str:
        size = str.__len__(text)
        keep = size if size + 2 <= self.left else max(self.left, 0) + 1
        self.spend(size + 2)
        return str.__getitem__(text, slice(0, keep))

    def sequence(self, value: Any, kind: type, depth: int) -> list[Any]:
        out: list[Any] = []
        self.spend(1)
        for item in (list if issubclass(kind, list) else tuple).__iter__(value):
            if self.left < 0:
                return out
            if out:
                self.spend(2)
            out.append(self.json(item, depth + 1))
        self.spend(1)
        return out

    def mapping(self, value: Any, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.spend(1)
        for key, item in dict.items(value):
            if self.left < 0:
                return out
            if out:
                self.spend(2)
            name = self.key(key)
            while self.cut and name in out:  # a cut key: its end lies past what is kept
                name += "~"
            self.spend(2)
            out[name] = self.json(item, depth + 1)
        self.spend(1)
        return out

    def key(self, key: Any) -> str:
        """``str(key)``, as ``rlms`` names dict keys."""
        kind = type(key)
        if issubclass(kind, str):
            return self.string(key)
        if key is None or kind in (bool, int, float):
            return self.string(str(key))
        self.foreign = True
        return self.string(_text_or_failure(str, key))

    def top(self, value: Any) -> Any:
        """The value as ``REPLResult.locals`` keeps it."""
        kind = type(value)
        text = self.text_of(value, self.limit, 0)
        length: int | None = None
        if text is not None:
            if len(text) <= self.limit:
                return LocalText(text)
            prefix = text
        elif issubclass(kind, str):
            if str.__len__(value) <= self.limit:
                return str.__getitem__(value, slice(None))
            prefix = str.__getitem__(value, slice(0, self.limit))
        else:
            rendered = self.json(value, 0)
            if not self.cut:
                return rendered
            prefix = json.dumps(rendered, ensure_ascii=False)
            if not issubclass(kind, _SIZED):
                length = len(prefix)
        if length is None:
            length = _sized_length(value, kind) if issubclass(kind, _SIZED) else len(prefix)
        return CappedLocal(
            capped=True, type=_type_name(value), length=length, prefix=prefix[: self.limit]
        )


def _sized_length(value: Any, kind: type) -> int:
    for base in _SIZED:
        if issubclass(kind, base):
            return int(base.__len__(value))
    return 0


def describe_local(value: Any, limit: int = MAX_LOCAL_CHARS) -> Any:
    """A variable's value as ``REPLResult.locals`` holds it and trajectory logs write it, the
    way ``rlms`` writes it: ``None``, bools, numbers and strings as themselves, lists, tuples
    and dicts as lists and dicts (keys as text) of such values, and anything else as a
    :class:`LocalText` (nested inside a list or dict: as plain text).

    A value longer than ``limit`` characters (a string's characters; the JSON text of a list,
    tuple or dict; the text of anything else) becomes a :class:`CappedLocal`
    ``{"capped": True, "type": "str", "length": 10485760, "prefix": "..."}``: ``type`` is
    its type name, ``length`` is ``len(value)`` for a str, bytes, bytearray, list, tuple,
    dict, set or frozenset and the length of its text for anything else, and ``prefix`` is
    the first ``limit`` characters of the value as it would have been written.

    Only the first ``limit`` or so characters of a long built-in value are looked at (a
    10 MiB string is sliced, never copied or ``repr``-ed whole). The value's own code (a
    ``__repr__``, a ``__name__``, a dict key's ``__str__``) may run; whatever it raises,
    except ``KeyboardInterrupt``, gives ``<T>`` instead. A :class:`LocalText` or
    :class:`CappedLocal` is returned as it is.
    """
    return _describe(value, limit)[0]


def describe_locals(
    values: Mapping[str, Any], limit: int = MAX_LOCAL_CHARS
) -> tuple[dict[str, Any], bool]:
    """Every value described by :func:`describe_local`, and whether that may have run code
    of the values' own (a ``__repr__``, a ``__name__``, a dict key's ``__str__``)."""
    described: dict[str, Any] = {}
    foreign = False
    for name, value in values.items():
        described[name], ran = _describe(value, limit)
        foreign = foreign or ran
    return described, foreign


_PLAIN = (type(None), bool, float)


def _describe(value: Any, limit: int) -> tuple[Any, bool]:
    kind = type(value)
    if kind in _PLAIN or kind is LocalText or kind is CappedLocal:
        return value, False
    if kind is str:
        if len(value) <= limit:
            return value, False
        return CappedLocal(capped=True, type="str", length=len(value), prefix=value[:limit]), False
    if kind is int and value.bit_length() < limit:
        return value, False
    rendering = _Rendering(limit)
    try:
        return rendering.top(value), rendering.foreign or type(kind) is not type
    except KeyboardInterrupt:
        raise
    except BaseException:  # e.g. a container changed size while it was read
        return LocalText(f"<{_type_name(value)}>"), True


def _logged_local(value: Any) -> Any:
    local = describe_local(value)
    if type(local) is LocalText:
        return str.__str__(local)
    if type(local) is CappedLocal:
        return dict(local)
    return local


_WIRE_KINDS: dict[type, str] = {LocalText: "text", CappedLocal: "capped"}


def locals_to_wire(values: Mapping[str, Any]) -> dict[str, str]:
    """``REPLResult.locals`` as a protobuf ``map<string, string>``: each value as the JSON
    text of ``[position, kind, value]``, ``kind`` being ``"value"``, ``"text"`` (a
    :class:`LocalText`) or ``"capped"`` (a :class:`CappedLocal`), so that the order and the
    kind of each value survive the map."""
    out: dict[str, str] = {}
    for position, (name, value) in enumerate(values.items()):
        local = describe_local(value)
        kind = _WIRE_KINDS.get(type(local), "value")
        out[name] = json.dumps([position, kind, local])
    return out


def locals_from_wire(entries: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`locals_to_wire`; an entry in another form is kept as its text."""
    found: list[tuple[int, str, Any]] = []
    for name, data in entries.items():
        found.append((len(entries), name, data))
        try:
            decoded = json.loads(data)
        except ValueError:
            continue
        if not (isinstance(decoded, list) and len(decoded) == 3 and type(decoded[0]) is int):
            continue
        position, kind, value = decoded
        if kind == "text" and isinstance(value, str):
            value = LocalText(value)
        elif kind == "capped" and isinstance(value, dict):
            value = CappedLocal(value)
        elif kind != "value":
            continue
        found[-1] = (position, name, value)
    return {name: value for _, name, value in sorted(found, key=lambda entry: entry[0])}


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
    ``locals`` maps each variable (``answer``, the contexts, the user's variables; no
    private names, no REPL functions, no function tools) to its value as
    :func:`describe_local` renders it: as ``rlms`` writes it to its log, capped at
    :data:`MAX_LOCAL_CHARS` characters. ``final_answer`` is set when the cell set
    ``answer["ready"] = True``.
    """

    stdout: str = ""
    stderr: str = ""
    locals: dict[str, Any] = field(default_factory=dict)
    execution_time: float = 0.0
    rlm_calls: list[RLMChatCompletion] = field(default_factory=list)
    final_answer: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        """As ``rlms`` prints a result: ``REPLResult(stdout=..., stderr=..., locals=...,
        execution_time=..., rlm_calls=<count>)``."""
        return (
            f"REPLResult(stdout={self.stdout}, stderr={self.stderr}, locals={self.locals}, "
            f"execution_time={self.execution_time}, rlm_calls={len(self.rlm_calls)})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the ``rlms`` log shape (plus ``error``)."""
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "locals": {k: _logged_local(v) for k, v in self.locals.items()},
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


_JSON_SCALARS = (str, int, float, bool, type(None))
_EXACT_SCALARS = frozenset(_JSON_SCALARS)


def json_incompatibility(payload: Any, max_depth: int = MAX_CONTEXT_DEPTH) -> str | None:
    """Why ``payload`` cannot be a context (``None`` when it can): a context is a str,
    bytes, or lists, tuples and dicts of JSON scalars (keys: str, int, float, bool or None),
    the same in every environment, however it travels. Walked level by level without
    recursion; a payload whose nesting is within ``max_depth`` (checked first) that still
    has containers below that depth contains itself."""
    if isinstance(payload, (bytes, bytearray, memoryview, *_JSON_SCALARS)):
        return None
    if not isinstance(payload, _CONTAINERS):
        return f"it is a {type(payload).__name__}"
    level: list[Any] = [payload]
    for _ in range(max_depth + 2):
        below: list[Any] = []
        for container in level:
            if isinstance(container, dict):
                if not _EXACT_SCALARS.issuperset(map(type, container)):
                    for key in container:
                        if not isinstance(key, _JSON_SCALARS):
                            named = type(key).__name__
                            return f"it has a dict key of type {named} ({_short_repr(key)})"
                items: Iterable[Any] = container.values()
            else:
                items = container
            for item in items:
                kind = type(item)
                if kind in _EXACT_SCALARS:
                    continue
                if kind is list or kind is dict or isinstance(item, _CONTAINERS):
                    below.append(item)
                elif not isinstance(item, _JSON_SCALARS):
                    return f"it holds a {type(item).__name__} ({_short_repr(item)})"
        if not below:
            return None
        level = list({id(c): c for c in below}.values()) if len(below) > 1 else below
    return "a container in it contains itself"


def _short_repr(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ does not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_context(payload: Any, index: int = 0) -> None:
    """Raise :class:`ContextError` when context ``index`` nests deeper than
    :data:`MAX_CONTEXT_DEPTH`, or holds something other than JSON-compatible values
    (:func:`json_incompatibility`): every environment refuses the same contexts."""
    if nesting_depth_exceeds(payload, MAX_CONTEXT_DEPTH):
        raise ContextError(
            f"context {index} ({type(payload).__name__}) is nested more than "
            f"{MAX_CONTEXT_DEPTH} levels deep (lists, tuples and dicts inside each other); "
            f"contexts may nest at most {MAX_CONTEXT_DEPTH} levels. Flatten it, or pass it as "
            "a string (for example its JSON text)"
        )
    problem = json_incompatibility(payload)
    if problem is not None:
        raise ContextError(
            f"context {index}: a context must be str, bytes or JSON-compatible "
            f"(lists, tuples and dicts of str, int, float, bool and None), not "
            f"{type(payload).__name__}: {problem}"
        )
