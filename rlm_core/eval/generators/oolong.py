"""OOLONG-style aggregation over records whose labels a reader must infer.

``params``: ``question`` (one of :data:`QUESTIONS`; default: chosen by the seed). The answer
is computed from the generated records' labels:

* ``count``: how many records have a label (numeric);
* ``most_common`` / ``least_common``: the label (exact; the generator keeps it unique);
* ``compare``: whether one label is more common, less common or as common as another;
* ``user_count``: how many records of one user have a label (numeric).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from rlm_core.eval.generators import Generated
from rlm_core.eval.generators.records import (
    LABEL_GUIDE,
    LABELS,
    Record,
    make_record,
    render,
    user_ids,
)
from rlm_core.eval.generators.text import rng_for, target_chars

QUESTIONS: dict[str, str] = {
    "count": "How many records have the label '{label}'? Answer with the number only.",
    "most_common": "Which label occurs most often among the records? Answer with the label only.",
    "least_common": (
        "Which label occurs least often among the records? Answer with the label only."
    ),
    "compare": (
        "Is the label '{label}' more common, less common or as common as the label '{other}' "
        "among the records? Answer with 'more common', 'less common' or 'same frequency'."
    ),
    "user_count": (
        "How many records of user {user} have the label '{label}'? Answer with the number only."
    ),
}
"""The question of each kind (after :data:`records.LABEL_GUIDE`)."""

_ATTEMPTS = 50


def make_records(seed: object, context_length: int, attempt: int) -> list[Record]:
    """Records filling about ``context_length`` tokens, label mix and users chosen by seed."""
    rng = rng_for("oolong", seed, context_length, attempt)
    weights = [rng.uniform(0.5, 3.0) for _ in LABELS]
    budget = target_chars(context_length)
    users = user_ids(rng, max(5, min(200, budget // 1500)))
    records: list[Record] = []
    used = 0
    while True:
        record = make_record(rng, rng.choice(users), rng.choices(LABELS, weights)[0])
        cost = len(record.line()) + (1 if records else 0)
        if records and used + cost > budget:
            return records
        records.append(record)
        used += cost


def _unique_extremes(counts: Counter[str]) -> bool:
    values = sorted(counts[label] for label in LABELS)
    return values[-1] != values[-2] and values[0] != values[1]


def _compare(a: int, b: int) -> str:
    if a > b:
        return "more common"
    return "less common" if a < b else "same frequency"


def generate(params: Mapping[str, Any], seed: int, context_length: int) -> Generated:
    """One aggregation question over seeded records."""
    kinds = sorted(QUESTIONS)
    rng = rng_for("oolong-question", seed, context_length)
    kind = str(params.get("question") or rng.choice(kinds))
    if kind not in QUESTIONS:
        raise ValueError(f"oolong question must be one of {kinds}, not {kind!r}")
    for attempt in range(_ATTEMPTS):
        records = make_records(seed, context_length, attempt)
        counts = Counter(r.label for r in records)
        if _unique_extremes(counts):
            break
    label, other = rng.sample(LABELS, 2)
    user = rng.choice(records).user
    answer: Any
    if kind == "count":
        answer = counts[label]
    elif kind == "most_common":
        answer = max(LABELS, key=lambda name: counts[name])
    elif kind == "least_common":
        answer = min(LABELS, key=lambda name: counts[name])
    elif kind == "compare":
        answer = _compare(counts[label], counts[other])
    else:
        answer = sum(1 for r in records if r.user == user and r.label == label)
    question = QUESTIONS[kind].format(label=label, other=other, user=user)
    scorer = "numeric" if isinstance(answer, int) else "exact"
    return Generated(render(records), f"{LABEL_GUIDE} {question}", answer, scorer)
