"""OOLONG-Pairs-style questions: every pair of users whose records meet a condition.

``params``: ``question`` (one of :data:`QUESTIONS`; default: chosen by the seed). One or two
labels are kept rare: only the users planned to qualify (and, for ``both_labels``, decoy
users with just one of the two) ever get them, so the answer has a few dozen pairs at any
context length. The answer is computed from the records; it is scored by set F1 over pairs.
"""

from __future__ import annotations

import itertools
import random
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
    "one_label": (
        "List every pair of user IDs where both users have at least one record with the "
        "label '{a}'."
    ),
    "either_label": (
        "List every pair of user IDs where both users have at least one record with the "
        "label '{a}' or the label '{b}'."
    ),
    "both_labels": (
        "List every pair of user IDs where both users have at least one record with the "
        "label '{a}' and at least one record with the label '{b}'."
    ),
}
"""The question of each kind (after :data:`records.LABEL_GUIDE`, before :data:`ANSWER_FORMAT`)."""

ANSWER_FORMAT = " Write one pair per line as 'ID1, ID2' with the smaller ID first, each pair once."


def qualifies(kind: str, labels: set[str], a: str, b: str) -> bool:
    """Whether a user with records of ``labels`` meets the condition of ``kind``."""
    if kind == "one_label":
        return a in labels
    if kind == "either_label":
        return a in labels or b in labels
    return a in labels and b in labels


def _planned(rng: random.Random, kind: str, users: list[int], a: str, b: str) -> list[Record]:
    """The rare-label records: for qualifying users and, for ``both_labels``, decoys."""
    count = rng.randint(4, min(10, len(users) - 2))
    chosen = rng.sample(users, count + 2)
    planned: list[Record] = []
    for user in chosen[:count]:
        if kind == "one_label":
            wanted = [a] * rng.randint(1, 3)
        elif kind == "either_label":
            wanted = [rng.choice((a, b)) for _ in range(rng.randint(1, 2))]
        else:
            wanted = [a, b] + [rng.choice((a, b))] * rng.randint(0, 1)
        planned += [make_record(rng, user, label) for label in wanted]
    if kind == "both_labels":  # decoys: one of the two labels only
        planned.append(make_record(rng, chosen[count], a))
        planned.append(make_record(rng, chosen[count + 1], b))
    return planned


def generate(params: Mapping[str, Any], seed: int, context_length: int) -> Generated:
    """One pairs question over seeded records of about ``context_length`` tokens."""
    kinds = sorted(QUESTIONS)
    rng = rng_for("pairs", seed, context_length)
    kind = str(params.get("question") or rng.choice(kinds))
    if kind not in QUESTIONS:
        raise ValueError(f"oolong_pairs question must be one of {kinds}, not {kind!r}")
    a, b = rng.sample(LABELS, 2)
    common = [label for label in LABELS if label not in (a, b)]
    budget = target_chars(context_length)
    users = user_ids(rng, max(12, min(200, budget // 1500)))
    planned = _planned(rng, kind, users, a, b)
    used = sum(len(r.line()) + 1 for r in planned)
    records: list[Record] = []
    while True:
        record = make_record(rng, rng.choice(users), rng.choice(common))
        if used + len(record.line()) + 1 > budget:
            break
        records.append(record)
        used += len(record.line()) + 1
    for record in planned:
        records.insert(rng.randint(0, len(records)), record)
    labels_of: dict[int, set[str]] = {}
    for record in records:
        labels_of.setdefault(record.user, set()).add(record.label)
    winners = sorted(u for u, labels in labels_of.items() if qualifies(kind, labels, a, b))
    answer = [[u, v] for u, v in itertools.combinations(winners, 2)]
    question = f"{LABEL_GUIDE} {QUESTIONS[kind].format(a=a, b=b)}{ANSWER_FORMAT}"
    return Generated(render(records), question, answer, "pairs_f1")
