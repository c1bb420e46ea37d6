"""The pytest plugin (entry point ``pytest11``): options, ids, time guards and the summary.

Inert unless the suite is used: without ``--rlm-environment`` and without a subclass of
the suite among the collected tests, it adds two options and one marker, and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rlm_conformance.cases import CASES, MARKER, Case, case_of
from rlm_conformance.record import SETUP_KEY, SKIPPED_FOR_KEY, RunRecord, SetupInfo

if TYPE_CHECKING:
    from rlm_conformance.setup import EnvironmentSetup

RUN_KEY = pytest.StashKey[RunRecord]()
SELECTED_KEY = pytest.StashKey["EnvironmentSetup"]()
SELECTED_MODULE = Path(__file__).resolve().with_name("test_selected.py")
DEFAULT_TIMEOUT = 300.0
"""Seconds a standard test may take before pytest-timeout fails it (a hang guard only)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rlm-environment NAME`` and ``--rlm-environment-kwargs JSON``."""
    group = parser.getgroup("rlm-conformance", "rlm-core environment conformance suite")
    group.addoption(
        "--rlm-environment",
        metavar="NAME",
        default=None,
        help="run the conformance suite (pytest --pyargs rlm_conformance) on this "
        "environment, by its entry-point name",
    )
    group.addoption(
        "--rlm-environment-kwargs",
        metavar="JSON",
        default=None,
        help="the environment's settings as a JSON object",
    )


def selected_setup(config: pytest.Config) -> EnvironmentSetup | None:
    """The setup named on the command line, checked (``pytest.UsageError`` when the name
    is unknown or the settings are refused)."""
    name = config.getoption("--rlm-environment")
    raw = config.getoption("--rlm-environment-kwargs")
    if name is None:
        if raw is not None:
            raise pytest.UsageError("--rlm-environment-kwargs needs --rlm-environment NAME")
        return None
    try:
        kwargs: Any = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"--rlm-environment-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise pytest.UsageError("--rlm-environment-kwargs must be a JSON object")
    from rlm_conformance.setup import EnvironmentSetup

    setup = EnvironmentSetup(name, kwargs)
    try:
        setup.capabilities()  # loads the plugin and checks the settings; starts nothing
    except Exception as exc:
        raise pytest.UsageError(f"rlm-conformance: {exc}") from None
    return setup


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; check the selected environment before anything runs."""
    config.addinivalue_line(
        "markers", f"{MARKER}(id, title, requires): a standard rlm-conformance test"
    )
    config.stash[RUN_KEY] = RunRecord()
    if not hasattr(config, "workerinput"):  # a pytest-xdist worker's reports go upstream
        config.pluginmanager.register(_Recorder(config.stash[RUN_KEY]), "rlm-conformance-record")
    setup = selected_setup(config)
    if setup is not None:
        config.stash[SELECTED_KEY] = setup


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Make ids selectable with ``-k CTX-007``; give standard tests a hang guard."""
    selected = SELECTED_KEY in config.stash
    for item in items:
        if not selected and Path(str(item.path)).resolve() == SELECTED_MODULE:
            pytest.exit(
                "rlm_conformance: choose the environment to test with --rlm-environment NAME "
                "(and its settings with --rlm-environment-kwargs JSON)",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        found = standard_case(item)
        if found is None:
            continue
        item.extra_keyword_matches.add(found.id)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


def standard_case(item: pytest.Item) -> Case | None:
    """The standard test ``item`` runs: by its marker, or, for a subclass's explicit
    override of a standard test, by the method's name."""
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        return CASES.get(marker.kwargs["id"])
    suite = sys.modules.get("rlm_conformance.suite")
    if suite is None:  # nothing imported the suite: no test can come from it
        return None
    cls = getattr(item, "cls", None)
    name = getattr(item, "originalname", item.name)
    for group in suite.GROUPS:
        if cls is not None and issubclass(cls, group) and name in vars(group):
            return case_of(vars(group)[name])
    return None


def _outcome(report: pytest.TestReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed:
        return "failed"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "call" else None


REPORT_PROPERTY = "rlm_conformance"
"""The ``user_properties`` entry a standard test's report carries for the summary (plain
data, so pytest-xdist carries it from its workers to the process that prints)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Put what the summary needs of a standard test on its report."""
    report = yield
    found = standard_case(item)
    if found is None:
        return report
    info = item.stash.get(SETUP_KEY, None)
    if info is None:  # the setup fixture itself failed
        cls = getattr(item, "cls", None)
        label = cls.__name__ if cls is not None else item.nodeid
        info = SetupInfo(label, "?", "?", frozenset())
    facts = {
        "setup": [info.label, info.distribution, info.version, sorted(info.claimed)],
        "id": found.id,
        "requires": list(found.requires),
        "skipped_for": item.stash.get(SKIPPED_FOR_KEY, None),
    }
    report.user_properties.append((REPORT_PROPERTY, facts))
    return report


class _Recorder:
    """Records standard tests' outcomes from their reports, in the process that prints the
    summary (with pytest-xdist, the controller, which gets every worker's reports)."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record the outcome a standard test's report carries."""
        found = next((v for k, v in report.user_properties if k == REPORT_PROPERTY), None)
        if not isinstance(found, dict):
            return
        facts: dict[str, Any] = found
        outcome = _outcome(report)
        if outcome is None:
            return
        label, distribution, version, claimed = facts["setup"]
        reason = None
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        self.record.add(
            SetupInfo(label, distribution, version, frozenset(claimed)),
            facts["id"],
            tuple(facts["requires"]),
            outcome,
            facts["skipped_for"],
            reason,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A selected run in which no standard test ran, or none passed, fails."""
    config = session.config
    if SELECTED_KEY not in config.stash:
        return
    record = config.stash[RUN_KEY]
    ran = any(
        outcome in ("passed", "failed")
        for setup in record.setups.values()
        for outcome in setup.outcomes.values()
    )
    if not ran:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print which environment ran, how many tests ran and what they verified."""
    record = config.stash.get(RUN_KEY, None)
    selected = config.stash.get(SELECTED_KEY, None)
    if record is None or (not record.setups and selected is None):
        return
    terminalreporter.write_sep("=", "rlm-conformance")
    if not record.setups:
        terminalreporter.write_line(
            f"NO conformance test ran for {selected.describe() if selected else '?'}: "
            "collect the suite with `pytest --pyargs rlm_conformance --rlm-environment NAME` "
            "(or `rlm conformance NAME`)",
            red=True,
        )
        return
    for line in record.lines():
        terminalreporter.write_line(line)
    if selected is not None and not any(
        o in ("passed", "failed") for s in record.setups.values() for o in s.outcomes.values()
    ):
        terminalreporter.write_line("NO conformance test ran: the run fails", red=True)
