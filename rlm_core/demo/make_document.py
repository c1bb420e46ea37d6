"""Generate the demo document ``lighthouse_logs.txt`` and the true answer to the demo question.

The document is four years of logbooks from forty lighthouse stations, one logbook per
station and year, in a shuffled order within each year, so a station's entries are spread
over four places in the file. Every entry is one dated line ``YYYY-MM-DD  Heading: text``.
Storms are logged under STORM, GALE or TEMPEST headings in varied capitalisation, and the
word "storm" also turns up in entries that are not storms (storm shutters, storm lanterns,
storm drills, the ship *Storm Petrel*), so neither ``grep STORM`` nor a case-insensitive
``grep storm`` gives the right answer.

Generation is seeded, so ``python -m rlm_core.demo.make_document`` always writes the same
bytes and prints the true answer.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from rlm_core.demo import DOCUMENT_NAME

SEED = 1884
YEARS: tuple[int, ...] = (1884, 1885, 1886, 1887)
STORM_HEADINGS: tuple[str, ...] = ("STORM", "Storm", "GALE", "Gale", "TEMPEST", "Tempest")
"""Headings that mark a storm entry; the question counts exactly these (any case)."""
STORM_UPPER = frozenset(h.upper() for h in STORM_HEADINGS)

ANSWER_TEMPLATE = "{station} recorded the most storms: {count}."
"""How the demo phrases the answer."""

LOGBOOK_HEADER = re.compile(r"^==== LOGBOOK: (?P<station>.+?) -- (?P<year>\d{4}) ====$")
ENTRY = re.compile(r"^\s+\d{4}-\d{2}-\d{2}\s+(?P<heading>[^:]+):")

STATIONS: tuple[str, ...] = (
    "Skerrow Point",
    "Gannet Rock",
    "Hollin Head",
    "Black Nab",
    "Carrick Sound",
    "Mew Stone",
    "Farrowdown",
    "Kestle Bar",
    "Orran Isle",
    "Puffin Ledge",
    "Quarrel Head",
    "Rathlow Spit",
    "Saltcombe",
    "Tarbet Ness",
    "Ulvish Light",
    "Vennor Reef",
    "Wrack Point",
    "Yarrow Holm",
    "Ardnish Rock",
    "Brindle Cove",
    "Corran Narrows",
    "Dunmore Skerry",
    "Eilean Dubh",
    "Fairlight Head",
    "Gorran Haven",
    "Harrow Sands",
    "Inchcolm East",
    "Jura Sound",
    "Kilbride Point",
    "Lismore North",
    "Maidens Rock",
    "North Carr",
    "Oxna Light",
    "Portland Bill Low",
    "Rona Head",
    "St. Abb's Outer",
    "Trevose Head",
    "Whaleback Shoal",
    "Longstone Reef",
    "Noss Head",
)
WINNER = "Dunmore Skerry"
"""The station given the highest storm rate (the generator checks it really wins)."""
WINNER_STORMS = 27
"""How many storms the winner logs; every other station logs fewer."""
DECOY = "Tarbet Ness"
"""A station that writes STORM and mentions storm shutters a lot: ``grep`` picks it."""

KEEPERS_FIRST = ("James", "Thomas", "William", "Robert", "Alexander", "John", "Hugh", "Donald")
KEEPERS_LAST = ("Marsh", "Gunn", "Tulloch", "Pender", "Rowe", "McLeod", "Carne", "Fraser", "Ord")
WINDS = ("N", "NNE", "NE", "E", "SE", "S", "SW", "WSW", "W", "NW", "NNW")
SHIPS = (
    "brig Hopewell",
    "schooner Mary Ann",
    "steamer Clansman",
    "barque Northern Star",
    "collier Elswick",
    "ketch Brothers",
    "smack Good Intent",
    "steam trawler Ocean Gem",
    "revenue cutter Vigilant",
    "packet Earl of Zetland",
    "barque Storm Petrel",
    "sloop Gale Runner",
)


@dataclass
class Document:
    """The generated text and the ground truth behind it."""

    text: str
    storm_counts: dict[str, int]
    entries: int = 0
    logbooks: int = 0
    naive_grep_counts: dict[str, int] = field(default_factory=dict)

    @property
    def winner(self) -> tuple[str, int]:
        """The station with the most storms and its count."""
        station = max(self.storm_counts, key=lambda s: self.storm_counts[s])
        return station, self.storm_counts[station]

    @property
    def answer(self) -> str:
        """The true answer to :data:`rlm_core.demo.QUESTION`, phrased as the demo phrases it."""
        station, count = self.winner
        return format_answer(station, count)


def format_answer(station: str, count: int) -> str:
    """Phrase an answer with :data:`ANSWER_TEMPLATE`."""
    return ANSWER_TEMPLATE.format(station=station, count=count)


def count_storms(text: str) -> dict[str, int]:
    """Count storm entries per station by parsing logbook text (the reference parser)."""
    counts: Counter[str] = Counter()
    station: str | None = None
    for line in text.splitlines():
        header = LOGBOOK_HEADER.match(line)
        if header:
            station = header["station"]
            counts[station] += 0
            continue
        entry = ENTRY.match(line)
        if entry and station is not None and entry["heading"].strip().upper() in STORM_UPPER:
            counts[station] += 1
    return dict(counts)


# -- entry text -------------------------------------------------------------------------


def _storm(rng: random.Random, heading: str) -> str:
    wind = rng.choice(WINDS)
    force = rng.randint(8, 12)
    detail = rng.choice(
        (
            f"wind {wind} force {force}, heavy sea breaking over the rocks",
            f"blowing hard from the {wind} all night, spray over the lantern glazing",
            f"force {force} from the {wind}; boat hauled up and lashed",
            f"violent squalls from the {wind}, rain in sheets; lamp kept burning throughout",
            f"sea running very high, landing impossible; wind {wind} force {force}",
            f"barometer fell to {rng.randint(2840, 2930) / 100:.2f} in.; wind {wind}, "
            f"force {force} by midnight",
            f"gallery rail damaged by the sea; wind {wind} force {force} until dawn",
        )
    )
    return f"{heading}: {detail}."


def _weather(rng: random.Random, storm_word: bool) -> str:
    wind = rng.choice(WINDS)
    if storm_word:
        return rng.choice(
            (
                f"Weather: fair, wind {wind} light; no storm signals hoisted at the port.",
                f"Weather: overcast, wind {wind} force {rng.randint(2, 4)}; the storm "
                "forecast from the port came to nothing.",
                f"Weather: calm after yesterday's rain, wind {wind}; no storm expected.",
            )
        )
    return rng.choice(
        (
            f"Weather: fair, wind {wind} force {rng.randint(1, 4)}, visibility good.",
            f"Weather: haze at dawn clearing by noon, wind {wind} light.",
            f"Weather: fog from {rng.randint(1, 11)} a.m., fog signal sounded "
            f"{rng.randint(2, 9)} hours.",
            f"Weather: showers, wind {wind} force {rng.randint(3, 6)}, sea moderate.",
            f"Weather: frost overnight, clear sky, wind {wind} light airs.",
            f"Weather: drizzle, wind {wind} force {rng.randint(2, 5)}; barometer "
            f"{rng.randint(2950, 3060) / 100:.2f} in.",
        )
    )


def _ships(rng: random.Random) -> str:
    ship = rng.choice(SHIPS)
    course = rng.choice(WINDS)
    return rng.choice(
        (
            f"Ships: {ship} passed heading {course} at {rng.randint(6, 18)}:00.",
            f"Ships: {ship} and {rng.randint(2, 14)} fishing boats sighted to the {course}.",
            f"Ships: {ship} signalled all well, bound {course}.",
            f"Ships: {ship} at anchor in the roads, weather-bound.",
        )
    )


def _supplies(rng: random.Random, storm_word: bool) -> str:
    if storm_word:
        return rng.choice(
            (
                f"Supplies: {rng.randint(2, 6)} storm lanterns and spare glasses received.",
                "Supplies: tender landed oil and a case of storm candles.",
            )
        )
    return rng.choice(
        (
            f"Supplies: tender landed {rng.randint(40, 160)} gallons of colza oil.",
            f"Supplies: {rng.randint(2, 12)} bags of coal and {rng.randint(1, 4)} casks of "
            "biscuit received.",
            f"Supplies: {rng.randint(12, 48)} new wicks and a box of chimney glasses.",
            "Supplies: fresh water tank refilled from the tender.",
            f"Supplies: paint ({rng.randint(2, 8)} tins) and brushes for the tower.",
        )
    )


def _repairs(rng: random.Random, storm_word: bool) -> str:
    if storm_word:
        return rng.choice(
            (
                "Repairs: storm shutters on the lantern room rehung and greased.",
                "Repairs: storm shutters painted; one hinge renewed.",
                "Repairs: storm door of the oil store refitted.",
            )
        )
    return rng.choice(
        (
            "Repairs: lens cleaned and brass polished.",
            f"Repairs: {rng.randint(2, 9)} panes of the lantern glazing reputtied.",
            "Repairs: clockwork of the revolving apparatus oiled and adjusted.",
            "Repairs: gallery rail scraped and painted.",
            "Repairs: landing steps cleared of weed.",
            f"Repairs: {rng.randint(3, 20)} slates replaced on the dwelling roof.",
        )
    )


def _other(rng: random.Random, storm_word: bool) -> str:
    if storm_word:
        return rng.choice(
            (
                "Drill: storm drill held with the assistant keepers.",
                "Note: the great storm of 1881 still talked of in the village.",
                "Note: read the Board's circular on storm warnings to the assistants.",
            )
        )
    return rng.choice(
        (
            f"Lamp: lit at {rng.randint(4, 8)}:{rng.randint(0, 59):02d} p.m., "
            f"extinguished at {rng.randint(5, 8)}:{rng.randint(0, 59):02d} a.m.",
            "Visitors: the Superintendent inspected the station; all found in order.",
            "Visitors: boat from the mainland with letters.",
            f"Note: {rng.randint(2, 30)} birds killed striking the lantern overnight.",
            "Note: assistant keeper on leave; relief keeper arrived.",
            "Drill: fire drill held; pumps tried.",
        )
    )


# -- the document -----------------------------------------------------------------------


def _preamble() -> str:
    return "\n".join(
        (
            "COLLECTED STATION LOGBOOKS OF THE NORTHERN COAST LIGHTS, 1884-1887",
            "",
            f"Forty stations, one logbook per station and year ({len(YEARS) * len(STATIONS)} "
            "logbooks).",
            "Within each year the logbooks are bound in the order they reached the office.",
            "Each entry is one line: date, heading, text. Keepers chose their own headings.",
            "",
            "",
        )
    )


def build(seed: int = SEED) -> Document:
    """Generate the document and its ground truth (deterministic for a given seed)."""
    rng = random.Random(seed)
    profiles: dict[str, tuple[int, float, tuple[str, ...]]] = {}
    for station in STATIONS:
        if station == WINNER:
            profiles[station] = (WINNER_STORMS, 0.01, ("Gale", "GALE", "Tempest"))
        elif station == DECOY:
            profiles[station] = (WINNER_STORMS - 7, 0.14, ("STORM",))
        else:
            style = rng.choice((STORM_HEADINGS[:2], STORM_HEADINGS[2:4], STORM_HEADINGS))
            storms = rng.randint(5, WINNER_STORMS - 4)
            profiles[station] = (storms, rng.uniform(0.01, 0.05), style)
    sizes = {s: [rng.randint(34, 46) for _ in YEARS] for s in STATIONS}
    storm_slots = {s: set(rng.sample(range(sum(sizes[s])), profiles[s][0])) for s in STATIONS}

    counts: Counter[str] = Counter()
    naive: Counter[str] = Counter()
    parts = [_preamble()]
    entries = 0
    for year_index, year in enumerate(YEARS):
        order = list(STATIONS)
        rng.shuffle(order)
        for station in order:
            _, storm_word_rate, headings = profiles[station]
            keeper = f"{rng.choice(KEEPERS_FIRST)} {rng.choice(KEEPERS_LAST)}"
            n = sizes[station][year_index]
            first_slot = sum(sizes[station][:year_index])
            days = sorted(rng.sample(range(365), n))
            lines = [
                f"==== LOGBOOK: {station} -- {year} ====",
                f"Principal keeper: {keeper}. Station number {STATIONS.index(station) + 1:02d}.",
            ]
            for slot, day in enumerate(days, start=first_slot):
                when = (date(year, 1, 1) + timedelta(days=day)).isoformat()
                if slot in storm_slots[station]:
                    text = _storm(rng, rng.choice(headings))
                    counts[station] += 1
                else:
                    storm_word = rng.random() < storm_word_rate
                    kind = rng.randrange(5)
                    if kind == 0:
                        text = _weather(rng, storm_word)
                    elif kind == 1:
                        text = _ships(rng)
                    elif kind == 2:
                        text = _supplies(rng, storm_word)
                    elif kind == 3:
                        text = _repairs(rng, storm_word)
                    else:
                        text = _other(rng, storm_word)
                if "storm" in text.lower():
                    naive[station] += 1
                lines.append(f"  {when}  {text}")
                entries += 1
            lines.append(f"==== END OF LOGBOOK: {station} -- {year} ({n} entries) ====")
            parts.append("\n".join(lines) + "\n\n")
            counts[station] += 0
    return Document(
        text="".join(parts),
        storm_counts=dict(counts),
        entries=entries,
        logbooks=len(YEARS) * len(STATIONS),
        naive_grep_counts=dict(naive),
    )


def check(doc: Document) -> None:
    """Assert the properties the demo relies on (unique winner, grep is misleading)."""
    ranked = sorted(doc.storm_counts.values(), reverse=True)
    if ranked[0] - ranked[1] < 2:
        raise AssertionError(f"winner is not clear: top counts {ranked[:3]}")
    if count_storms(doc.text) != doc.storm_counts:
        raise AssertionError("parsing the text does not reproduce the generated counts")
    grep_top = max(doc.naive_grep_counts, key=lambda s: doc.naive_grep_counts[s])
    if grep_top == doc.winner[0]:
        raise AssertionError("a plain grep for 'storm' already finds the winner")


def document_path() -> Path:
    """Where the bundled document lives."""
    return Path(__file__).with_name(DOCUMENT_NAME)


def expected_answer() -> str:
    """The true answer to the demo question (regenerated, not read from the file)."""
    return build().answer


def main(argv: Sequence[str] | None = None) -> int:
    """Write the document (or ``--check`` the bundled one) and print the true answer."""
    parser = argparse.ArgumentParser(
        prog="python -m rlm_core.demo.make_document",
        description="Write lighthouse_logs.txt and print the true answer to the demo question.",
    )
    parser.add_argument("--output", type=Path, default=document_path(), help="file to write")
    parser.add_argument(
        "--check", action="store_true", help="only verify the file matches, write nothing"
    )
    args = parser.parse_args(argv)
    doc = build()
    check(doc)
    data = doc.text.encode("utf-8")
    if args.check:
        same = args.output.exists() and args.output.read_bytes() == data
        print(f"{args.output}: {'up to date' if same else 'DIFFERS from the generator'}")
        if not same:
            return 1
    else:
        args.output.write_bytes(data)
        print(f"wrote {args.output} ({len(data):,} bytes)")
    station, count = doc.winner
    ranked = sorted(doc.storm_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    grep_top = max(doc.naive_grep_counts, key=lambda s: doc.naive_grep_counts[s])
    print(
        f"{doc.logbooks} logbooks, {doc.entries:,} entries, {sum(doc.storm_counts.values())} storms"
    )
    print("top stations: " + ", ".join(f"{s} {n}" for s, n in ranked[:4]))
    print(
        f"a case-insensitive grep for 'storm' would pick {grep_top} "
        f"({doc.naive_grep_counts[grep_top]} lines)"
    )
    print(f"true answer: {format_answer(station, count)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
