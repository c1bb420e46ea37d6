"""S-NIAH-style needle retrieval: find the magic number(s) for a key hidden in filler prose.

``params``: ``needles`` (numbers for the asked key, default 1; several make a multi-needle
task scored by set F1) and ``distractors`` (needles of other, similar keys, default 0).
The key of a distractor shares one word with the asked key, so only an exact match of the
whole key finds the right needles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlm_core.eval.generators import Generated
from rlm_core.eval.generators.text import (
    ADJECTIVES,
    NOUNS,
    filler_sentences,
    join_prose,
    rng_for,
    target_chars,
)

NEEDLE = "The special magic number for {key} is {number}."
SINGLE_QUESTION = (
    "What is the special magic number for {key} mentioned in the text? Answer with the number only."
)
MULTI_QUESTION = (
    "The text mentions several special magic numbers for {key}. What are all of them? "
    "Answer with the numbers only, separated by commas."
)


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"niah parameter {name!r} must be an integer >= {low}, not {value!r}")
    return value


def generate(params: Mapping[str, Any], seed: int, context_length: int) -> Generated:
    """A haystack of about ``context_length`` tokens with the needles at seeded depths."""
    needles = _int_param(params, "needles", 1, 1)
    distractors = _int_param(params, "distractors", 0, 0)
    rng = rng_for("niah", seed, context_length, needles, distractors)
    adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    key = f"{adjective}-{noun}"
    others = [f"{adjective}-{n}" for n in NOUNS if n != noun]
    others += [f"{a}-{noun}" for a in ADJECTIVES if a != adjective]
    distractor_keys = [rng.choice(others) for _ in range(distractors)]
    numbers = rng.sample(range(1_000_000, 10_000_000), needles + distractors)
    inserts = [NEEDLE.format(key=key, number=n) for n in numbers[:needles]]
    inserts += [
        NEEDLE.format(key=k, number=n)
        for k, n in zip(distractor_keys, numbers[needles:], strict=True)
    ]
    room = target_chars(context_length) - sum(len(s) + 1 for s in inserts)
    sentences = filler_sentences(rng, max(0, room))
    for sentence in inserts:
        sentences.insert(rng.randint(0, len(sentences)), sentence)
    context = join_prose(sentences, rng)
    if needles == 1:
        return Generated(context, SINGLE_QUESTION.format(key=key), str(numbers[0]), "exact")
    answer = sorted(str(n) for n in numbers[:needles])
    return Generated(context, MULTI_QUESTION.format(key=key), answer, "set_f1")
