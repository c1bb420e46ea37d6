"""Scorers: ``score(prediction, answer) -> float`` in [0, 1].

* ``exact``: equal after normalising case, spaces, surrounding quotes and a final period;
* ``contains``: the normalised answer appears in the normalised prediction;
* ``numeric``: the first number in the prediction equals the answer;
* ``numeric_partial``: OOLONG's partial credit, ``0.75 ** |prediction - answer|``;
* ``set_f1``: F1 between the answer's items and the prediction's (split on lines, commas,
  semicolons and "and");
* ``pairs_f1``: F1 between unordered pairs, read as ``a, b`` (one pair a line, or in
  parentheses).

``"package.module:function"`` names any other scorer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from rlm_core.eval.references import load_object
from rlm_core.exceptions import ConfigurationError

Scorer = Callable[[str, Any], float]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_ITEM_SPLIT = re.compile(r"[\n,;]|\band\b")
_PAIR = re.compile(r"([\w.-]+)\s*,\s*([\w.-]+)")


def normalize(text: Any) -> str:
    """Lower case, single spaces, no surrounding quotes, backticks or final period."""
    value = " ".join(str(text).split()).casefold()
    return value.strip().strip("\"'`*").rstrip(".").strip()


def exact(prediction: str, answer: Any) -> float:
    """1.0 when the normalised strings are equal."""
    return 1.0 if normalize(prediction) == normalize(answer) else 0.0


def contains(prediction: str, answer: Any) -> float:
    """1.0 when the normalised answer occurs in the normalised prediction."""
    return 1.0 if normalize(answer) in normalize(prediction) else 0.0


def first_number(text: str) -> float | None:
    """The first number in ``text`` (thousands separators ignored), or ``None``."""
    match = _NUMBER.search(re.sub(r"(?<=\d),(?=\d{3}\b)", "", str(text)))
    return float(match.group()) if match else None


def numeric(prediction: str, answer: Any) -> float:
    """1.0 when the prediction's first number equals the answer."""
    got, want = first_number(prediction), float(answer)
    return 1.0 if got is not None and math.isclose(got, want, rel_tol=1e-9) else 0.0


def numeric_partial(prediction: str, answer: Any) -> float:
    """``0.75 ** |prediction - answer|`` (0 when the prediction has no number)."""
    got = first_number(prediction)
    return 0.0 if got is None else float(0.75 ** abs(got - float(answer)))


def f1(predicted: set[Any], expected: set[Any]) -> float:
    """F1 of two sets; 1.0 when both are empty."""
    if not predicted and not expected:
        return 1.0
    hits = len(predicted & expected)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(expected)
    return 2 * precision * recall / (precision + recall)


def items(text: str) -> set[str]:
    """The normalised items of a list written as text."""
    return {normalize(part) for part in _ITEM_SPLIT.split(text) if normalize(part)}


def _answer_items(answer: Any) -> Iterable[Any]:
    return answer if isinstance(answer, list | tuple | set) else [answer]


def set_f1(prediction: str, answer: Any) -> float:
    """F1 between the items of the prediction and of the answer (a list, or text)."""
    expected: set[str] = set()
    for item in _answer_items(answer):
        expected |= items(str(item))
    return f1(items(prediction), expected)


def pairs(text: str) -> set[frozenset[str]]:
    """Unordered pairs ``a, b`` found in ``text``."""
    return {frozenset((normalize(a), normalize(b))) for a, b in _PAIR.findall(str(text))}


def pairs_f1(prediction: str, answer: Any) -> float:
    """F1 between the unordered pairs of the prediction and of the answer."""
    expected: set[frozenset[str]] = set()
    for item in _answer_items(answer):
        if isinstance(item, list | tuple) and len(item) == 2:
            expected.add(frozenset((normalize(item[0]), normalize(item[1]))))
        else:
            expected |= pairs(str(item))
    return f1(pairs(prediction), expected)


SCORERS: dict[str, Scorer] = {
    "exact": exact,
    "contains": contains,
    "numeric": numeric,
    "numeric_partial": numeric_partial,
    "set_f1": set_f1,
    "pairs_f1": pairs_f1,
}
"""The built-in scorers by name."""


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (built-in) or referenced as ``module:function``."""
    found = SCORERS.get(name)
    if found is not None:
        return found
    if ":" not in name:
        raise ConfigurationError(f"unknown scorer {name!r}; built-in: {', '.join(SCORERS)}")
    scorer = load_object(name, "scorer")
    if not callable(scorer):
        raise ConfigurationError(f"scorer {name!r} is not callable")
    return scorer  # type: ignore[no-any-return]


def score(name: str, prediction: str | None, answer: Any) -> float:
    """Score ``prediction`` (``None`` scores 0) against ``answer`` with scorer ``name``."""
    if prediction is None:
        return 0.0
    value = float(get_scorer(name)(prediction, answer))
    return min(1.0, max(0.0, value))
