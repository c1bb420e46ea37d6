"""The suite's own behaviour: inert unless used, both ways of running it, ids and
capability skips, the summary, the guard against changed standard tests, and a run that
tests nothing failing."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlm_conformance.__main__ import table
from rlm_conformance.cases import CASES

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"

SUBCLASS = """
import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests

class TestLocal(EnvironmentTests):
    @pytest.fixture
    def environment_setup(self):
        return EnvironmentSetup("local")
{extra}
"""


def subclass(pytester: pytest.Pytester, extra: str = "") -> None:
    pytester.makepyfile(test_provider=SUBCLASS.format(extra=extra))


def test_inert_without_the_suite(pytester: pytest.Pytester) -> None:
    # In a pytest process of its own: the plugin is loaded (it is installed) but loads
    # neither the suite nor rlm-core nor gRPC, and prints nothing.
    pytester.makepyfile(
        "import sys\n"
        "def test_plain(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.has_plugin('rlm_conformance')\n"
        "    heavy = ('rlm_conformance.suite', 'rlm_core', 'grpc')\n"
        "    assert [m for m in heavy if m in sys.modules] == []\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "= rlm-conformance =" not in result.stdout.str()


def test_pyargs_needs_an_environment(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--pyargs", "rlm_conformance")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*choose the environment to test with --rlm-environment NAME*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rlm-environment", "no-such-env"], "*unknown environment 'no-such-env'*"),
        (["--rlm-environment", "local", "--rlm-environment-kwargs", "{bad"], "*not valid JSON*"),
        (["--rlm-environment", "local", "--rlm-environment-kwargs", "[1]"], "*JSON object*"),
        (
            ["--rlm-environment", "subprocess", "--rlm-environment-kwargs", '{"cell_timout": 1}'],
            "*did you mean 'cell_timeout'*",
        ),
        (["--rlm-environment-kwargs", "{}"], "*needs --rlm-environment NAME*"),
    ],
)
def test_bad_selection_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--pyargs", "rlm_conformance", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_pyargs_run_selects_by_id_and_prints_the_summary(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--pyargs", "rlm_conformance",
        "--rlm-environment", "local", "-k", "CTX-002 or REP-006 or ISO-001",
    )  # fmt: skip
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*= rlm-conformance =*",
            "environment: local",
            "  provided by: rlm-core *",
            "  tests: 3 selected, 2 ran, 2 passed, 0 failed, 1 skipped",
            "  skipped, capability not claimed: isolated (1)",
            "  claimed: compaction, persistent, recursive, subcalls",
        ]
    )


def test_skip_reason_names_the_id_and_the_capability(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--pyargs", "rlm_conformance",
        "--rlm-environment", "local", "-k", "CEL-012", "-rs",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*CEL-012 needs the 'timeout' capability, which local does not claim*"]
    )


def test_a_selected_run_that_tests_nothing_fails(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--pyargs", "rlm_conformance",
        "--rlm-environment", "local", "-k", "ISO",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*NO conformance test ran*"])


def test_subclass_runs_the_suite(pytester: pytest.Pytester) -> None:
    subclass(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "CTX-0 or STD-001")
    result.assert_outcomes(passed=len([c for c in CASES if c[:3] in ("CTX", "STD")]))
    result.stdout.fnmatch_lines(["environment: local", "  verified: -"])


def test_the_summary_counts_every_worker_under_xdist(pytester: pytest.Pytester) -> None:
    subclass(pytester)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "-k", "CTX-00 or REP-006 or ISO-001"
    )  # fmt: skip
    result.assert_outcomes(passed=10, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*= rlm-conformance =*",
            "environment: local",
            "  tests: 11 selected, 10 ran, 10 passed, 0 failed, 1 skipped",
            "  skipped, capability not claimed: isolated (1)",
        ]
    )
    assert "no standard test" not in result.stdout.str()


def test_subclass_without_a_setup_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_provider="from rlm_conformance import EnvironmentTests\n"
        "class TestMine(EnvironmentTests):\n    pass\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "CTX-001")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*override the environment_setup fixture*"])


def test_guard_fails_a_silent_override(pytester: pytest.Pytester) -> None:
    subclass(pytester, "    def test_empty(self):\n        pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "STD-001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CTX-001 (test_empty) was overridden without*xfail*"])


def test_guard_fails_a_deleted_test(pytester: pytest.Pytester) -> None:
    subclass(pytester, "    test_bytes = None\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "STD-001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CTX-003 (test_bytes) was deleted*"])


def test_guard_accepts_an_explicit_xfail(pytester: pytest.Pytester) -> None:
    override = (
        "    @pytest.mark.xfail(reason='this provider has no empty strings', strict=True)\n"
        "    def test_empty(self):\n        assert False\n"
    )
    subclass(pytester, override)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "STD-001 or CTX-001")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["  tests: 2 selected, 2 ran, 1 passed, 0 failed, 0 skipped, 1 xfailed"]
    )


def test_every_test_has_a_unique_id_and_there_are_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.function for c in CASES.values()}) == len(CASES)


def test_docs_list_every_test() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert table() in text, (
        "docs/conformance.md is out of date: paste `python -m rlm_conformance --markdown`"
    )
