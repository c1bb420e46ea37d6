"""The bundled demo: the document, its ground truth, and ``rlm demo`` end to end."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from lm_server import LMServer, openai_server  # noqa: F401  (fixture)
from test_cli import (
    UNINSTALLED,
    assert_one_line_error,
    rlm,
    rlm_knowing_uninstalled,
    root_or_sub,
    run_python,
)

from rlm_core.demo import QUESTION
from rlm_core.demo.make_document import (
    STORM_HEADINGS,
    build,
    count_storms,
    document_path,
    expected_answer,
)
from rlm_core.demo.run import (
    SCRIPTED_NOTICE,
    load_document,
    run_demo,
    scripted_lm,
    scripted_sub_reply,
)

TRUTH = build()


# -- the document -----------------------------------------------------------------------


def test_bundled_document_is_what_the_generator_writes() -> None:
    data = document_path().read_bytes()
    assert data == TRUTH.text.encode("utf-8")
    assert build().text == TRUTH.text  # deterministic
    assert 400_000 <= len(data) <= 700_000
    assert load_document() == TRUTH.text


def test_generator_check_mode_prints_the_truth() -> None:
    proc = run_python(["-m", "rlm_core.demo.make_document", "--check"])
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    assert f"true answer: {TRUTH.answer}" in proc.stdout


def test_truth_is_computable_from_the_text() -> None:
    assert count_storms(TRUTH.text) == TRUTH.storm_counts
    assert len(TRUTH.storm_counts) == 40
    station, count = TRUTH.winner
    assert TRUTH.answer == f"{station} recorded the most storms: {count}."
    ranked = sorted(TRUTH.storm_counts.values(), reverse=True)
    assert ranked[0] > ranked[1]


def test_a_plain_grep_is_not_enough() -> None:
    lines = TRUTH.text.splitlines()
    station = None
    upper: dict[str, int] = {}
    any_case: dict[str, int] = {}
    for line in lines:
        header = re.match(r"==== LOGBOOK: (.+?) -- \d{4} ====$", line)
        if header:
            station = header.group(1)
        elif station is not None:
            upper[station] = upper.get(station, 0) + ("STORM" in line)
            any_case[station] = any_case.get(station, 0) + ("storm" in line.lower())
    winner = TRUTH.winner[0]
    assert max(upper, key=lambda s: upper[s]) != winner
    assert max(any_case, key=lambda s: any_case[s]) != winner
    headings = {h for h in STORM_HEADINGS if f"  {h}: " in TRUTH.text}
    assert headings == set(STORM_HEADINGS)


# -- the scripted stand-in LM -----------------------------------------------------------


def test_scripted_sub_lm_reads_the_chunk_it_is_given() -> None:
    chunk = (
        "Count the storms.\n\n"
        "==== LOGBOOK: Alpha -- 1884 ====\n"
        "  1884-01-01  Gale: wind NW force 9.\n"
        "  1884-01-02  Repairs: storm shutters rehung.\n"
        "  1884-01-03  tempest: force 11.\n"
        "==== LOGBOOK: Beta -- 1884 ====\n"
        "  1884-02-01  Weather: fair.\n"
    )
    assert scripted_sub_reply(chunk) == "Alpha: 2\nBeta: 0"
    assert scripted_lm([{"role": "user", "content": chunk}]) == "Alpha: 2\nBeta: 0"


def test_scripted_root_follows_the_repl_output() -> None:
    system = {"role": "system", "content": "You are an RLM."}
    first = scripted_lm([system, {"role": "user", "content": QUESTION}])
    assert "```repl" in first and "len(context)" in first
    # The reply's own code does not count as output: the marker needs a number.
    echoed = [system, {"role": "assistant", "content": first}, {"role": "user", "content": first}]
    assert scripted_lm(echoed) == first
    probed = [*echoed[:2], {"role": "user", "content": "REPL output:\nlogbook sections: 160"}]
    second = scripted_lm(probed)
    assert "llm_query_batched" in second
    counted = [*probed, {"role": "user", "content": "storm counts from 8 sub-LM replies:"}]
    assert 'answer["ready"] = True' in scripted_lm(counted)


# -- running it -------------------------------------------------------------------------


def test_run_demo_scripted_computes_the_true_answer() -> None:
    out = io.StringIO()
    result = run_demo(out=out, backend="scripted")
    assert result.response == TRUTH.answer == expected_answer()
    text = out.getvalue()
    assert "not a real model" in text
    match = re.search(r"Sub-LM calls \(llm_query / llm_query_batched\): (\d+)", text)
    assert match is not None
    calls = int(match[1])
    assert calls >= 2
    assert result.usage_summary.total_calls == calls + 3  # three root turns
    assert isinstance(result.metadata, dict)
    assert len(result.metadata["iterations"]) == 3


def test_rlm_demo_subprocess_without_credentials() -> None:
    proc = rlm("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(SCRIPTED_NOTICE)
    assert "scripted stand-in LM" in out
    match = re.search(r"Sub-LM calls \(llm_query / llm_query_batched\): (\d+)", out)
    assert match is not None and int(match[1]) >= 1
    assert "llm_query_batched(" in out  # the cell's code is shown
    assert f"Final answer:    {TRUTH.answer}" in out
    assert f"Expected answer: {TRUTH.answer}" in out
    assert "matches" in out


def test_rlm_demo_unknown_environment() -> None:
    name, dist = UNINSTALLED
    proc = rlm_knowing_uninstalled("demo", "--environment", name)
    line = assert_one_line_error(proc)
    assert f"pip install {dist}" in line


def test_rlm_demo_openai_without_key_is_a_one_line_error() -> None:
    proc = rlm("demo", "--backend", "openai")
    line = assert_one_line_error(proc)
    assert "OPENAI_API_KEY" in line


def test_run_demo_uses_a_real_backend_when_a_base_url_is_set(
    openai_server: LMServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("RLM_DEMO_MODEL", "served-model")

    def reply(body: dict[str, Any]) -> str:
        if root_or_sub(body) == "root":
            return (
                "```repl\nn = len(context)\n"
                'answer["content"] = f"read {n} characters"\nanswer["ready"] = True\n```'
            )
        return "sub"

    openai_server.reply = reply
    out = io.StringIO()
    result = run_demo(out=out)
    assert result.response == f"read {len(TRUTH.text)} characters"
    assert "real model served-model" in out.getvalue()
    assert SCRIPTED_NOTICE not in out.getvalue()
    assert {b["model"] for b in openai_server.bodies} == {"served-model"}
