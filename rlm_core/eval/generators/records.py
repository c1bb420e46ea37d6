"""Records for the OOLONG-style tasks: one line per record, with a date, a user and a short
question whose category (the record's label) is never written in the text.

    Date: Mar 04, 2023 || User: 48213 || Instance: What does NASA stand for?

Labels follow TREC's coarse question classes, so a reader has to understand each instance
to label it; every template of a label is unambiguous about it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, timedelta

LABELS: tuple[str, ...] = ("abbreviation", "entity", "description", "human", "location", "numeric")

LABEL_GUIDE = (
    "The text is a list of records, one per line: a date, a user ID and an instance. Each "
    "instance is a question that belongs to exactly one of these categories (its label, "
    "which is not written in the text): abbreviation (asks what an abbreviation stands for), "
    "entity (asks about a thing such as an animal, a colour or an instrument), description "
    "(asks for a reason, an explanation or a meaning), human (asks about a person), location "
    "(asks about a place) and numeric (asks for a number, an amount or a date)."
)

_ABBREVIATIONS = ("NASA", "UNESCO", "RADAR", "LASER", "SCUBA", "NATO", "DNA", "HTML", "GPS")
_ANIMALS = ("otter", "falcon", "lynx", "heron", "badger", "salmon", "gecko", "walrus")
_THINGS = ("the printing press", "the compass", "the telescope", "paper money", "the bicycle")
_PLACES = ("Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Quebec", "Tbilisi", "Perth")
_LANDMARKS = ("the Eiffel Tower", "Machu Picchu", "the Blue Mosque", "Table Mountain")
_TOPICS = ("rainbows", "tides", "volcanoes", "eclipses", "auroras", "earthquakes", "monsoons")
_ROLES = ("president", "mayor", "astronaut", "poet laureate", "chief engineer", "judge")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "abbreviation": ("What does {abbr} stand for?", "What is the full form of {abbr}?"),
    "entity": (
        "What kind of animal is the {animal} related to?",
        "Which instrument was used to study {topic}?",
        "What colour is the feather of the {animal}?",
    ),
    "description": (
        "Why do {topic} happen?",
        "How does {thing} work?",
        "What is the meaning of the old proverb about {topic}?",
    ),
    "human": ("Who invented {thing}?", "Which person became the first {role} of {place}?"),
    "location": ("Where is {landmark} located?", "In which country is the city of {place}?"),
    "numeric": (
        "How many {animal}s live near {place}?",
        "When was {thing} first used?",
        "How much did the tickets to {landmark} cost?",
    ),
}
"""Instance templates per label; each template's opening words belong to one label only."""

RECORD = "Date: {date} || User: {user} || Instance: {text}"
RECORD_RE = re.compile(
    r"^Date: (?P<date>.+?) \|\| User: (?P<user>\d+) \|\| Instance: (?P<text>.*)$"
)
DATE_FORMAT = "%b %d, %Y"


@dataclass(frozen=True)
class Record:
    """One record and its (hidden) label."""

    day: date
    user: int
    text: str
    label: str

    def line(self) -> str:
        """The record as it appears in the context."""
        return RECORD.format(date=self.day.strftime(DATE_FORMAT), user=self.user, text=self.text)


def instance(rng: random.Random, label: str) -> str:
    """A seeded instance text of ``label``."""
    template = rng.choice(TEMPLATES[label])
    return template.format(
        abbr=rng.choice(_ABBREVIATIONS),
        animal=rng.choice(_ANIMALS),
        thing=rng.choice(_THINGS),
        place=rng.choice(_PLACES),
        landmark=rng.choice(_LANDMARKS),
        topic=rng.choice(_TOPICS),
        role=rng.choice(_ROLES),
    )


def user_ids(rng: random.Random, count: int) -> list[int]:
    """``count`` distinct five-digit user IDs."""
    return rng.sample(range(10_000, 100_000), count)


def make_record(rng: random.Random, user: int, label: str) -> Record:
    """A record of ``user`` labelled ``label`` on a seeded day of 2023."""
    day = date(2023, 1, 1) + timedelta(days=rng.randrange(365))
    return Record(day, user, instance(rng, label), label)


def render(records: list[Record]) -> str:
    """The context: one line per record."""
    return "\n".join(r.line() for r in records)
