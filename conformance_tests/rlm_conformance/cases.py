"""Stable test ids and the capabilities each test needs.

Every standard test is declared with :func:`case`: an id that never changes meaning
(``CTX-007``), a one-line title, and the capabilities it needs. Docs, failure messages and
the run's summary name tests by id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

MARKER = "conformance"
"""The pytest marker every standard test carries (``id``, ``title``, ``requires``)."""

_ID = re.compile(r"^[A-Z]{3}-\d{3}$")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Case:
    """One standard test: its id, what it checks, and the capabilities it needs."""

    id: str
    title: str
    requires: tuple[str, ...] = ()
    group: str = ""
    function: str = ""


CASES: dict[str, Case] = {}
"""Every declared case by id (filled as the suite's modules are imported)."""


def case(case_id: str, title: str, *, requires: Iterable[str] = ()) -> Callable[[F], F]:
    """Declare a standard test: ``@case("CTX-007", "a 50 MiB context", requires=[...])``.

    The id must look like ``ABC-123`` and be unique across the suite.
    """
    if not _ID.match(case_id):
        raise ValueError(f"conformance ids look like ABC-123, not {case_id!r}")
    needs = tuple(requires)

    def mark(function: F) -> F:
        known = CASES.get(case_id)
        if known is not None and known.function != function.__qualname__:
            raise ValueError(f"conformance id {case_id} is used twice ({known.function})")
        group = function.__qualname__.split(".")[0]
        CASES[case_id] = Case(case_id, title, needs, group, function.__qualname__)
        function.__conformance_case__ = CASES[case_id]  # type: ignore[attr-defined]
        marked: F = pytest.mark.conformance(id=case_id, title=title, requires=needs)(function)
        return marked

    return mark


def case_of(function: Any) -> Case | None:
    """The :class:`Case` a test function was declared as, if any."""
    found = getattr(function, "__conformance_case__", None)
    return found if isinstance(found, Case) else None
