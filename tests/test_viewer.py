"""The trajectory viewer: the page is built from the log and checked in headless Chromium.

Chromium is the Debian ``chromium`` package (``make test`` installs it when run as root with
apt-get). Each browser run is its own process group with a fresh profile directory; the
group is killed and the directory removed afterwards. The page sets ``data-ready`` on
``<html>`` once it has drawn everything; ``--dump-dom`` returns the DOM after the page's
scripts ran, and every console message the page produces (it produces none when it works)
is read from Chromium's log on stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_logs import RLMS_LOG, is_child, read_log, record_run

from rlm_core.cli import main
from rlm_core.viewer import LogFileError, load_log, render_html, write_html
from rlm_core.viewer.render import script_json, template
from rlm_core.viewer.usage import Usage

DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs" / "images" / "viewer.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


# -- Chromium ----------------------------------------------------------------------------------


def chromium_binary() -> str | None:
    """``chromium`` on PATH, else ``/usr/bin/chromium``, else ``None``."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def require_chromium() -> str:
    """The Chromium binary; without one, skip the test, or fail it under ``CI=true``."""
    binary = chromium_binary()
    if binary is None:
        reason = (
            "headless Chromium is not installed: `make test` installs the Debian chromium "
            "package when run as root with apt-get (or run: apt-get install chromium)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the viewer's browser test needs Chromium under CI=true; {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("", "skip")])
def test_without_chromium_the_browser_test_skips_or_fails_under_ci(
    ci: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="apt-get install chromium"):
        require_chromium()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


@dataclass
class BrowserRun:
    """What one headless Chromium run printed: the DOM (for ``--dump-dom``) and the page's
    console messages."""

    stdout: str
    console: list[str] = field(default_factory=list)


def run_chromium(binary: str, url: str, *flags: str) -> BrowserRun:
    """Run Chromium once on ``url`` in its own process group and profile directory; kill the
    group and remove the directory afterwards, and check that no process of it is left."""
    profile = tempfile.mkdtemp(prefix="rlm-viewer-chromium-")
    env = {
        **os.environ,
        "HOME": profile,
        "XDG_CONFIG_HOME": profile,
        "XDG_CACHE_HOME": profile,
    }
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while _group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(profile, ignore_errors=True)
    assert _group_members(proc.pid) == [], "Chromium left processes running"
    assert not os.path.exists(profile)
    text = err.decode("utf-8", "replace")
    console = [line for line in text.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return BrowserRun(out.decode("utf-8", "replace"), console)


# -- reading the DOM ---------------------------------------------------------------------------

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Dom(HTMLParser):
    """Every element of a serialised DOM, with its attributes and text."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in VOID_TAGS:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.parts.append(data)

    def kind(self, name: str) -> list[Element]:
        return [e for e in self.elements if e.attrs.get("data-kind") == name]

    def root(self) -> Element:
        return next(e for e in self.elements if e.tag == "html")


def expected_counts(lines: list[dict[str, Any]]) -> Counter[str]:
    """Iterations, cells, plain sub-calls and child RLMs in a log, at every depth."""
    counts: Counter[str] = Counter()

    def walk(iterations: list[dict[str, Any]], depth: int) -> None:
        for iteration in iterations:
            counts["iteration"] += 1
            counts[f"iteration@{depth}"] += 1
            for block in iteration["code_blocks"]:
                counts["cell"] += 1
                for call in block["result"]["rlm_calls"]:
                    if is_child(call):
                        counts["child"] += 1
                        walk(call["metadata"]["iterations"], depth + 1)
                    else:
                        counts["subcall"] += 1

    walk([e for e in lines if e.get("type") != "metadata"], 0)
    return counts


def assert_page_matches_log(dom: Dom, lines: list[dict[str, Any]]) -> Counter[str]:
    assert dom.root().attrs.get("data-ready") == "true"
    expected = expected_counts(lines)
    for kind in ("iteration", "cell", "subcall", "child"):
        assert len(dom.kind(kind)) == expected[kind], kind
    root_iterations = [e for e in dom.kind("iteration") if e.attrs["data-depth"] == "0"]
    assert len(root_iterations) == expected["iteration@0"]
    assert len(dom.kind("timeline-item")) == expected["iteration@0"]
    stats = {e.attrs["data-name"]: int(e.attrs["data-value"]) for e in dom.kind("stat")}
    assert stats["iterations"] == expected["iteration"]
    assert stats["children"] == expected["child"]
    return expected


# -- the recorded run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_run(tmp_path_factory.mktemp("viewer-log"))


@pytest.fixture(scope="module")
def recorded_page(recorded_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_html(recorded_log, tmp_path_factory.mktemp("viewer-page") / "run.html")


def test_recorded_run_renders_in_chromium(
    chromium: str, recorded_log: Path, recorded_page: Path
) -> None:
    run = run_chromium(chromium, recorded_page.as_uri(), "--dump-dom")
    assert run.console == []
    dom = Dom(run.stdout)
    lines = read_log(recorded_log)
    expected = assert_page_matches_log(dom, lines)
    assert expected["child"] == 3 and expected["subcall"] == 6 and expected["iteration@0"] == 4
    nested = [e for e in dom.kind("iteration") if e.attrs["data-depth"] == "1"]
    assert len(nested) == expected["iteration"] - expected["iteration@0"]
    assert {e.attrs["data-depth"] for e in dom.kind("child")} == {"1"}
    assert {e.attrs["data-depth"] for e in dom.kind("subcall")} == {"1", "2"}
    # log text is shown as text: the markup a cell printed is not markup on the page
    assert dom.kind("pwned") == []
    assert any('<div data-kind="pwned">' in e.text for e in dom.kind("stdout"))
    costs = {
        (row.attrs["data-depth"], row.attrs["data-model"]): _cost_of(dom, row)
        for row in dom.kind("usage-row")
    }
    assert costs[("0", "scripted")] == "unknown"
    assert costs[("1", "scripted")] == "unknown"
    assert costs[("2", "scripted")] == "unknown"
    assert re.fullmatch(r"\$0\.\d{6}", costs[("1", "priced-sub")])
    assert costs[("1", "priced-sub")] != "$0.000000"


def _cost_of(dom: Dom, row: Element) -> str:
    """The text of the cost cell of a table row."""
    start = next(i for i, e in enumerate(dom.elements) if e is row)
    for element in dom.elements[start + 1 :]:
        assert element.tag != "tr", "the row has no cost cell"
        if element.attrs.get("data-kind") == "cost":
            return element.text
    raise AssertionError("the row has no cost cell")


def test_screenshot_of_the_recorded_run(chromium: str, recorded_page: Path, tmp_path: Path) -> None:
    update_docs = os.environ.get("RLM_UPDATE_DOCS_SCREENSHOT") == "1"
    target = DOCS_IMAGE if update_docs else tmp_path / "viewer.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    run = run_chromium(
        chromium,
        recorded_page.as_uri() + "#children",
        "--hide-scrollbars",
        "--window-size=1280,2000",
        f"--screenshot={target}",
    )
    assert run.console == []
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert target.stat().st_size > 10_000


def test_a_log_written_by_rlms_0_1_3_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    page = write_html(RLMS_LOG, tmp_path / "rlms.html")
    run = run_chromium(chromium, page.as_uri(), "--dump-dom")
    assert run.console == []
    dom = Dom(run.stdout)
    expected = assert_page_matches_log(dom, read_log(RLMS_LOG))
    assert (expected["iteration"], expected["cell"], expected["subcall"], expected["child"]) == (
        5,
        6,
        4,
        1,
    )
    (gap,) = [r for r in dom.kind("usage-row") if r.attrs["data-source"] == "missing"]
    assert gap.attrs["data-depth"] == "0" and "not recorded" in gap.text
    assert all(e.text == "unknown" for e in dom.kind("cost"))


def test_the_browser_check_sees_console_errors(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('logged-problem');"
        "throw new Error('thrown-problem');</script></body></html>",
        encoding="utf-8",
    )
    run = run_chromium(chromium, page.as_uri(), "--dump-dom")
    assert any("logged-problem" in line for line in run.console)
    assert any("Uncaught" in line and "thrown-problem" in line for line in run.console)


def test_the_served_page_renders_in_chromium(chromium: str, recorded_log: Path) -> None:
    with serving(recorded_log) as url:
        run = run_chromium(chromium, url, "--dump-dom")
    assert run.console == []
    assert_page_matches_log(Dom(run.stdout), read_log(recorded_log))


# -- the page without a browser ----------------------------------------------------------------


def test_embedded_json_cannot_end_the_script_element() -> None:
    data = {"text": "</script><script>alert(1)</script><!-- & \u2028 \u2029 </SCRIPT>"}
    embedded = script_json(data)
    assert not set("<>&") & set(embedded)
    assert json.loads(embedded) == data


def test_the_page_loads_nothing_from_outside() -> None:
    page = template()
    for pattern in (r"https?:", r"\bsrc\s*=", r"<link\b", r"@import", r"url\(", r"//[a-z]"):
        assert not re.search(pattern, page, re.IGNORECASE), pattern
    assert "innerHTML" not in page and "outerHTML" not in page and "insertAdjacentHTML" not in page
    assert "default-src 'none'" in page


def test_log_text_lands_only_in_the_json_island(recorded_log: Path) -> None:
    page = render_html(load_log(recorded_log))
    island = re.search(
        r'<script type="application/json" id="rlm-log">(.*?)</script>', page, re.DOTALL
    )
    assert island is not None
    assert "pwned" in island.group(1)
    outside = page.replace(island.group(1), "")
    assert "pwned" not in outside and "Ardmore" not in outside


def test_bad_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    lines = read_log(RLMS_LOG)
    log = tmp_path / "partly.jsonl"
    log.write_text(
        "\n".join([json.dumps(lines[0]), "{not json", json.dumps(lines[1]), "[1, 2]"]) + "\n",
        encoding="utf-8",
    )
    data = load_log(log)
    assert data["skipped_lines"] == [2, 4]
    assert len(data["runs"]) == 1 and len(data["runs"][0]["iterations"]) == 1


def test_an_rlms_logger_reused_for_two_completions_shows_two(tmp_path: Path) -> None:
    lines = read_log(RLMS_LOG)
    log = tmp_path / "twice.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in [*lines, *lines[1:]]) + "\n", "utf-8")
    data = load_log(log)
    assert [len(r["iterations"]) for r in data["runs"]] == [3, 3]
    assert data["runs"][1]["metadata"] == data["runs"][0]["metadata"]
    assert data["format"] == "rlms"


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LogFileError, match="not found"):
        load_log(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(LogFileError, match="not an RLM trajectory log"):
        load_log(empty)


def test_unknown_costs_stay_unknown_and_known_ones_add_up(recorded_log: Path) -> None:
    (run,) = load_log(RLMS_LOG)["runs"]
    assert all(row["cost"] is None for row in run["usage"])
    (run,) = load_log(recorded_log)["runs"]
    rows = {(r["depth"], r["model"]): r for r in run["usage"]}
    assert rows[(0, "scripted")]["cost"] is None and rows[(0, "scripted")]["calls"] == 4
    priced = rows[(1, "priced-sub")]
    assert priced["calls"] == 3 and priced["cost"] > 0 and not priced["cost_unknown"]
    assert run["totals"]["complete"]
    lines = read_log(recorded_log)
    plain = [c for e in lines[1:] for b in e["code_blocks"] for c in b["result"]["rlm_calls"]]
    known = sum(
        m.get("total_cost", 0.0)
        for c in plain
        if not is_child(c)
        for m in c["usage_summary"]["model_usage_summaries"].values()
    )
    assert priced["cost"] == pytest.approx(known)


def test_a_cost_is_unknown_unless_the_log_states_it() -> None:
    def summary(**fields: Any) -> dict[str, Any]:
        return {"model_usage_summaries": {"m": fields}}

    no_calls_given = Usage.from_summary(summary(total_input_tokens=5)).to_json()["m"]
    assert no_calls_given["cost"] is None and no_calls_given["cost_unknown"]
    mixed = Usage.from_summary(summary(total_calls=2, total_cost=0.25))
    mixed.add(Usage.from_summary(summary(total_calls=1)))
    shown = mixed.to_json()["m"]
    assert (shown["calls"], shown["cost"], shown["cost_unknown"]) == (3, 0.25, True)
    free = Usage.from_summary(summary(total_calls=1, total_cost=0.0)).to_json()["m"]
    assert free["cost"] == 0.0 and not free["cost_unknown"]


# -- the command -------------------------------------------------------------------------------


def test_rlm_view_writes_the_page_next_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "trajectory.jsonl"
    shutil.copyfile(RLMS_LOG, log)
    out, err = io.StringIO(), io.StringIO()
    assert main(["view", str(log)], stdout=out, stderr=err) == 0
    page = tmp_path / "trajectory.html"
    assert out.getvalue().strip() == str(page)
    assert 'id="rlm-log"' in page.read_text(encoding="utf-8")
    other = tmp_path / "elsewhere" / "page.html"
    other.parent.mkdir()
    assert main(["view", str(log), "-o", str(other)], stdout=out, stderr=err) == 0
    assert other.exists()


def test_rlm_view_reports_a_missing_log(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["view", str(tmp_path / "nope.jsonl")], stdout=out, stderr=err) == 2
    assert err.getvalue().startswith("rlm: error: log file not found:")


def test_rlm_view_serve_reports_a_port_in_use(recorded_log: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["view", "--serve", str(recorded_log), "--port", str(port)], stdout=out, stderr=err
        )
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.getvalue()


@contextlib.contextmanager
def serving(log: Path) -> Iterator[str]:
    """``rlm view --serve LOG`` as a process of its own group; yields the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_core.cli", "view", "--serve", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        yield url
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_rlm_view_serve_serves_the_page_on_loopback(recorded_log: Path) -> None:
    with serving(recorded_log) as url:
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            page = response.read().decode("utf-8")
        assert 'id="rlm-log"' in page and "Ardmore" in page
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "other", timeout=30)
        assert missing.value.code == 404
        missing.value.close()
