"""The standard tests, one mixin per group, and :class:`EnvironmentTests`, all of them.

Mixins have no ``Test`` prefix, so pytest never collects them on their own; a subclass
named ``Test...`` that also provides the ``environment_setup`` fixture runs them.
"""

from __future__ import annotations

from typing import Any

from rlm_conformance.cases import case, case_of
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite.answers import AnswerTests
from rlm_conformance.suite.cells import CellTests
from rlm_conformance.suite.completions import CompletionTests
from rlm_conformance.suite.contexts import ContextTests
from rlm_conformance.suite.escapes import EscapeTests
from rlm_conformance.suite.hostdeath import HostDeathTests
from rlm_conformance.suite.isolation import IsolationTests
from rlm_conformance.suite.lifecycle import LifecycleTests
from rlm_conformance.suite.names import ReplNameTests
from rlm_conformance.suite.security import BridgeSecurityTests
from rlm_conformance.suite.subcalls import SubcallTests


def _check_names_unique() -> None:
    seen: dict[str, str] = {}
    for group in GROUPS:
        for name in vars(group):
            if name.startswith("test_"):
                if name in seen:
                    raise TypeError(f"{group.__name__}.{name} hides {seen[name]}.{name}")
                seen[name] = group.__name__


def _explicit_xfail(function: Any) -> bool:
    marks = getattr(function, "pytestmark", [])
    return any(m.name == "xfail" and m.kwargs.get("reason") for m in marks)


def standard_test_changes(cls: type) -> list[str]:
    """Standard tests that ``cls`` deleted or overrode without an explicit
    ``@pytest.mark.xfail(reason=...)``, as messages naming their ids."""
    problems = []
    for group in GROUPS:
        if not issubclass(cls, group):
            continue
        for name, original in vars(group).items():
            declared = case_of(original)
            if declared is None:
                continue
            mine = getattr(cls, name, None)
            if mine is original:
                continue
            if mine is None:
                problems.append(f"{declared.id} ({name}) was deleted")
            elif not _explicit_xfail(mine):
                problems.append(
                    f"{declared.id} ({name}) was overridden without @pytest.mark.xfail(reason=...)"
                )
    return problems


class StandardTestGuard:
    """Fails when a subclass removes or silently replaces a standard test."""

    @case("STD-001", "no standard test is deleted or overridden without an xfail and reason")
    def test_standard_tests_kept(self) -> None:
        problems = standard_test_changes(type(self))
        assert not problems, "standard tests changed: " + "; ".join(problems)


class EnvironmentTests(
    StandardTestGuard,
    LifecycleTests,
    ContextTests,
    CellTests,
    ReplNameTests,
    SubcallTests,
    IsolationTests,
    EscapeTests,
    BridgeSecurityTests,
    AnswerTests,
    CompletionTests,
    HostDeathTests,
    EnvironmentFixtures,
):
    """The whole suite. Subclass it as ``Test<Provider>`` and override the
    ``environment_setup`` fixture::

        class TestMyProvider(EnvironmentTests):
            @pytest.fixture
            def environment_setup(self) -> EnvironmentSetup:
                return EnvironmentSetup("myprovider", {"region": "test"})
    """


GROUPS: tuple[type, ...] = EnvironmentTests.__bases__[1:-1]
"""Every group of standard tests, in the order the docs list them."""

_check_names_unique()


__all__ = [
    "GROUPS",
    "AnswerTests",
    "BridgeSecurityTests",
    "CellTests",
    "CompletionTests",
    "ContextTests",
    "EnvironmentTests",
    "EscapeTests",
    "HostDeathTests",
    "IsolationTests",
    "LifecycleTests",
    "ReplNameTests",
    "StandardTestGuard",
    "SubcallTests",
    "standard_test_changes",
]
