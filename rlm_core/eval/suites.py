"""Suites: the bundled ones (by name) and suite files.

``load_suite("niah")`` or ``load_suite("builtin:oolong", lengths=[8192, 65536], n=50)``
builds a bundled suite from the generators: ``n`` tasks per context length, cycling
through the suite's variants. ``load_suite("my_suite.jsonl")`` reads a file
(:mod:`rlm_core.eval.tasks`); ``n`` then keeps the first ``n`` tasks of each context length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_core.eval.generators.codeqa import QUESTIONS as CODEQA_QUESTIONS
from rlm_core.eval.generators.oolong import QUESTIONS as OOLONG_QUESTIONS
from rlm_core.eval.generators.pairs import QUESTIONS as PAIRS_QUESTIONS
from rlm_core.eval.tasks import Task, check_unique, read_tasks
from rlm_core.exceptions import ConfigurationError

BUILTIN_PREFIX = "builtin:"
DEFAULT_N = 10
"""Tasks per context length of a bundled suite when ``n`` is not given."""
DEFAULT_LENGTHS: tuple[int, ...] = (8192, 32768)
"""Context lengths (tokens) of a bundled suite when ``lengths`` are not given."""

Variant = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class BuiltinSuite:
    """A bundled suite: a description and the (generator, params) variants it cycles."""

    description: str
    variants: tuple[Variant, ...]


BUILTIN_SUITES: dict[str, BuiltinSuite] = {
    "niah": BuiltinSuite(
        "S-NIAH-style needle retrieval: one needle, one among distractors, three needles",
        (
            ("niah", {"needles": 1, "distractors": 0}),
            ("niah", {"needles": 1, "distractors": 4}),
            ("niah", {"needles": 3, "distractors": 4}),
        ),
    ),
    "oolong": BuiltinSuite(
        "OOLONG-style aggregation over records with inferred labels",
        tuple(("oolong", {"question": q}) for q in sorted(OOLONG_QUESTIONS)),
    ),
    "oolong-pairs": BuiltinSuite(
        "OOLONG-Pairs-style pairs of users meeting a condition (set F1)",
        tuple(("oolong_pairs", {"question": q}) for q in sorted(PAIRS_QUESTIONS)),
    ),
    "codeqa": BuiltinSuite(
        "questions about the installed Python standard library's source code",
        tuple(("codeqa", {"question": q}) for q in sorted(CODEQA_QUESTIONS)),
    ),
}
"""The bundled suites by name; ``all`` runs every one of them."""

ALL = "all"


@dataclass(frozen=True)
class Suite:
    """A named list of tasks."""

    name: str
    tasks: list[Task]


def parse_length(text: str) -> int:
    """``"8k"`` -> 8192, ``"1m"`` -> 1048576, ``"5000"`` -> 5000 (tokens)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if match is None or int(match.group(1)) < 1:
        raise ConfigurationError(f"context length {text!r} is not like 8k, 1m or 5000")
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * factor


def parse_lengths(text: str) -> list[int]:
    """Comma-separated context lengths."""
    return [parse_length(part) for part in text.split(",") if part.strip()]


def length_label(length: int) -> str:
    """8192 -> ``"8k"``, 1048576 -> ``"1m"``, 5000 -> ``"5000"``."""
    if length % (1024 * 1024) == 0:
        return f"{length // (1024 * 1024)}m"
    if length % 1024 == 0:
        return f"{length // 1024}k"
    return str(length)


def builtin_tasks(name: str, lengths: Sequence[int], n: int, seed: int = 0) -> list[Task]:
    """``n`` tasks per length of bundled suite ``name`` (``all``: of every one)."""
    names = sorted(BUILTIN_SUITES) if name == ALL else [name]
    tasks: list[Task] = []
    for suite_name in names:
        variants = BUILTIN_SUITES[suite_name].variants
        for length in lengths:
            for i in range(n):
                generator, params = variants[i % len(variants)]
                tasks.append(
                    Task(
                        id=f"{suite_name}-{length_label(length)}-{i:04d}",
                        generator=generator,
                        params=dict(params),
                        seed=seed * 1_000_003 + i,
                        context_length=length,
                    )
                )
    return tasks


def first_per_length(tasks: list[Task], n: int) -> list[Task]:
    """The first ``n`` tasks of each context length, in file order."""
    seen: dict[int | None, int] = {}
    kept: list[Task] = []
    for task in tasks:
        count = seen.get(task.context_length, 0)
        if count < n:
            kept.append(task)
        seen[task.context_length] = count + 1
    return kept


def builtin_names() -> list[str]:
    """Names of the bundled suites, ``all`` last."""
    return [*sorted(BUILTIN_SUITES), ALL]


def load_suite(
    ref: str,
    n: int | None = None,
    lengths: Sequence[int] | None = None,
    seed: int = 0,
) -> Suite:
    """A bundled suite (``name`` or ``builtin:name``) or a suite file."""
    name = ref[len(BUILTIN_PREFIX) :] if ref.startswith(BUILTIN_PREFIX) else None
    path = Path(ref)
    if name is None and not path.exists() and ref in builtin_names():
        name = ref
    if name is not None:
        if name not in builtin_names():
            known = ", ".join(builtin_names())
            raise ConfigurationError(f"unknown built-in suite {name!r}; built-in: {known}")
        tasks = builtin_tasks(name, list(lengths or DEFAULT_LENGTHS), n or DEFAULT_N, seed)
        return Suite(name, tasks)
    if lengths:
        raise ConfigurationError(
            "context lengths apply to built-in suites; a suite file sets each task's own"
        )
    if not path.exists():
        known = ", ".join(builtin_names())
        raise ConfigurationError(
            f"no suite file {ref!r} and no built-in suite of that name (built-in: {known})"
        )
    tasks = read_tasks(path)
    if n is not None:
        tasks = first_per_length(tasks, n)
    check_unique(tasks, ref)
    return Suite(path.stem, tasks)
