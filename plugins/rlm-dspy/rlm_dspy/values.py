"""What may cross into the sandbox: JSON-compatible values and Python identifiers.

Variables and tool results are converted the way DSPy's ``PythonInterpreter`` converts them
(Pydantic models, dataclasses and named tuples become dicts, tuples and sets become lists,
datetimes and enums their JSON form), then checked: anything still not JSON is refused with a
message that names it.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

INTERNAL_PREFIX = "__rlm_dspy"
"""Names in the sandbox namespace that this package owns."""

RESERVED_NAMES = frozenset({"SUBMIT", "__builtins__"})
"""Names no tool, variable or output field may take."""


class NotJSONError(TypeError):
    """A value cannot cross the sandbox boundary as JSON."""


def to_json_value(value: Any) -> Any:
    """``value`` with structured types turned into JSON types (a best effort: the result is
    not checked here, see :func:`json_text`)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return to_json_value(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_value(dataclasses.asdict(value))
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return to_json_value(value._asdict())
    if isinstance(value, dict):
        return {key: to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [to_json_value(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    try:
        return to_json_value(to_jsonable_python(value))
    except PydanticSerializationError:
        return value


def json_text(value: Any, what: str, *, allow_nan: bool = False) -> str:
    """``value`` (converted by :func:`to_json_value`) as JSON text; :class:`NotJSONError`
    naming ``what`` when it is not JSON-compatible."""
    try:
        return json.dumps(to_json_value(value), allow_nan=allow_nan)
    except (TypeError, ValueError, RecursionError, PydanticSerializationError) as exc:
        raise NotJSONError(
            f"{what} is not JSON-compatible ({type(value).__name__}): {exc}; only JSON values "
            "(str, int, float, bool, None, lists and dicts of them) cross the sandbox boundary"
        ) from None


def is_plain_name(name: object) -> bool:
    """A Python identifier that is not a keyword, not reserved and not this package's."""
    return (
        isinstance(name, str)
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and name not in RESERVED_NAMES
        and not name.startswith(INTERNAL_PREFIX)
    )


def invalid_names(names: Iterable[object]) -> list[object]:
    """The names of ``names`` that :func:`is_plain_name` refuses, in order."""
    return [name for name in names if not is_plain_name(name)]
