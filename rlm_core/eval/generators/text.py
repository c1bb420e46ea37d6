"""Seeded filler prose and the helpers every generator shares."""

from __future__ import annotations

import random
from functools import lru_cache

from rlm_core.tokens import CHARS_PER_TOKEN

_SUBJECTS = (
    "The committee",
    "A quiet engineer",
    "The old harbour town",
    "Every spring the orchard",
    "The research group",
    "Our neighbour",
    "The river",
    "A travelling musician",
    "The library",
    "The night shift",
    "The garden club",
    "A small bakery",
    "The mountain village",
    "The weather station",
    "The school choir",
    "A retired sailor",
)
_VERBS = (
    "considered",
    "discussed",
    "remembered",
    "rebuilt",
    "described",
    "painted",
    "measured",
    "questioned",
    "collected",
    "repaired",
    "studied",
    "celebrated",
    "ignored",
    "mapped",
    "planned",
    "recorded",
)
_OBJECTS = (
    "the long winter",
    "a forgotten recipe",
    "the new bridge",
    "several letters from abroad",
    "the price of wool",
    "an unusual cloud",
    "the village accounts",
    "a broken clock",
    "the harvest festival",
    "the coastal path",
    "a box of photographs",
    "the evening train",
    "the design of the tower",
    "the rules of the game",
    "a map of the valley",
    "the first snowfall",
)
_TAILS = (
    "with great care",
    "before anyone else arrived",
    "for most of the afternoon",
    "without much success",
    "in the usual way",
    "while the rain kept falling",
    "as the lamps were lit",
    "after a long argument",
    "to everyone's surprise",
    "during the holidays",
    "at the request of the mayor",
    "once the work was done",
)

ADJECTIVES = (
    "amber",
    "brisk",
    "cobalt",
    "dusty",
    "eager",
    "frosty",
    "gentle",
    "hollow",
    "ivory",
    "jolly",
    "kind",
    "lunar",
    "misty",
    "noble",
    "olive",
    "proud",
    "quiet",
    "rustic",
    "silver",
    "tidal",
    "umber",
    "vivid",
    "woolly",
    "young",
)
NOUNS = (
    "falcon",
    "harbor",
    "lantern",
    "meadow",
    "orchid",
    "pepper",
    "quarry",
    "river",
    "saddle",
    "thistle",
    "violin",
    "walnut",
    "anchor",
    "badger",
    "candle",
    "dragon",
    "ember",
    "fjord",
    "glacier",
    "heron",
)


def rng_for(*parts: object) -> random.Random:
    """A generator seeded from ``parts`` (stable across runs and interpreters)."""
    return random.Random(":".join(str(p) for p in parts))


def target_chars(context_length: int) -> int:
    """Characters of a context of ``context_length`` tokens (four characters a token)."""
    return max(0, context_length) * CHARS_PER_TOKEN


@lru_cache(maxsize=1)
def sentence_pool() -> tuple[str, ...]:
    """Every filler sentence (the same for every task; tasks differ in how they pick)."""
    return tuple(
        f"{s} {v} {o} {t}."
        for s in _SUBJECTS
        for v in _VERBS
        for o in _OBJECTS[:: (len(s) % 3) + 1]
        for t in _TAILS[:: (len(v) % 2) + 1]
    )


def filler_sentences(rng: random.Random, n_chars: int) -> list[str]:
    """Sentences chosen by ``rng`` whose total length (one space between each) reaches
    ``n_chars`` without passing it."""
    pool = sentence_pool()
    out: list[str] = []
    used = 0
    while True:
        batch = rng.choices(pool, k=256)
        for sentence in batch:
            cost = len(sentence) + (1 if out else 0)
            if used + cost > n_chars:
                return out
            out.append(sentence)
            used += cost


def join_prose(sentences: list[str], rng: random.Random) -> str:
    """Sentences joined into paragraphs of three to seven sentences."""
    paragraphs: list[str] = []
    i = 0
    while i < len(sentences):
        size = rng.randint(3, 7)
        paragraphs.append(" ".join(sentences[i : i + size]))
        i += size
    return "\n".join(paragraphs)
