"""Scorers: what counts as right, and by how much."""

from __future__ import annotations

import pytest

from rlm_core.eval.scorers import (
    contains,
    exact,
    get_scorer,
    numeric,
    numeric_partial,
    pairs_f1,
    score,
    set_f1,
)
from rlm_core.exceptions import ConfigurationError


def test_exact_ignores_case_spaces_quotes_and_a_final_period() -> None:
    assert exact("  Location.", "location") == 1.0
    assert exact("`json.decoder`", "json.decoder") == 1.0
    assert exact("'more  common'", "more common") == 1.0
    assert exact("json.encoder", "json.decoder") == 0.0
    assert exact("4821937", 4821937) == 1.0


def test_contains() -> None:
    assert contains("They met in Paris, in May.", "paris") == 1.0
    assert contains("They met in Rome.", "Paris") == 0.0


def test_numeric_reads_the_first_number() -> None:
    assert numeric("42", 42) == 1.0
    assert numeric("There are 1,204 records.", 1204) == 1.0
    assert numeric("42.0", 42) == 1.0
    assert numeric("about 41", 42) == 0.0
    assert numeric("none", 0) == 0.0
    assert numeric_partial("40", 42) == pytest.approx(0.75**2)
    assert numeric_partial("no idea", 42) == 0.0


def test_set_f1() -> None:
    answer = ["1234567", "2345678", "3456789"]
    assert set_f1("1234567, 2345678, 3456789", answer) == 1.0
    assert set_f1("3456789\n1234567 and 2345678.", answer) == 1.0
    assert set_f1("1234567, 2345678", answer) == pytest.approx(0.8)
    assert set_f1("1234567, 9999999", answer) == pytest.approx(0.4)
    assert set_f1("", answer) == 0.0


def test_pairs_f1_reads_unordered_pairs() -> None:
    answer = [[101, 202], [101, 303], [202, 303]]
    assert pairs_f1("101, 202\n101, 303\n202, 303", answer) == 1.0
    assert pairs_f1("(202, 101), (303, 101), (303, 202)", answer) == 1.0
    assert pairs_f1("101, 202\n101, 303", answer) == pytest.approx(0.8)
    assert pairs_f1("101, 202\n404, 505", answer) == pytest.approx(0.4)
    assert pairs_f1("none", []) == 1.0


def test_score_clamps_and_scores_missing_predictions_zero() -> None:
    assert score("exact", None, "x") == 0.0
    assert score("tests_scorer_module:too_generous", "x", "y") == 1.0


def test_scorers_by_reference_and_unknown_names() -> None:
    assert get_scorer("rlm_core.eval.scorers:exact") is exact
    with pytest.raises(ConfigurationError, match="unknown scorer 'exactly'"):
        get_scorer("exactly")
    with pytest.raises(ConfigurationError, match="cannot load scorer"):
        get_scorer("no_such_module:f")


def too_generous(prediction: str, answer: object) -> float:
    """A user scorer that returns more than 1 (clamped)."""
    return 3.0


@pytest.fixture(autouse=True)
def _scorer_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("tests_scorer_module")
    module.too_generous = too_generous  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests_scorer_module", module)
