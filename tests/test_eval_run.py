"""``rlm_core.eval.run`` and ``rlm eval`` on the local engine, with the scripted stand-in LM
that solves the bundled suites by writing code over the context."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_cli import cli_env

from rlm_core.eval import run
from rlm_core.eval.config import config_from_dict, load_config
from rlm_core.eval.engines.ray_engine import SLOT_RESOURCE, RayEngine
from rlm_core.eval.execute import run_task
from rlm_core.eval.plot import MISSING, plot_scores
from rlm_core.eval.progress import Progress
from rlm_core.eval.ratelimit import TokenBucket
from rlm_core.eval.report import summarize
from rlm_core.eval.results import TaskResult
from rlm_core.eval.scripted import solver
from rlm_core.eval.store import ResultStore
from rlm_core.eval.suites import load_suite
from rlm_core.exceptions import BackendError, ConfigurationError

TESTS = Path(__file__).resolve().parent
FLAKY_DIR = "RLM_EVAL_TEST_FLAKY_DIR"
STAND_IN = {"name": "rlm", "backend": "scripted", "max_iterations": 6}


def slow_solver(messages: list[dict[str, Any]]) -> str:
    """The stand-in, 0.1 s slower per root call (so a run can be killed halfway)."""
    if messages and messages[0].get("role") == "system":
        time.sleep(0.1)
    return solver(messages)


def flaky_solver(messages: list[dict[str, Any]]) -> str:
    """The stand-in, failing the first root call of each task as a backend would after its
    own retries (one marker file per task in ``$RLM_EVAL_TEST_FLAKY_DIR``, any process)."""
    if messages[0].get("role") == "system" and len(messages) == 3:
        digest = hashlib.sha256(str(messages[1]["content"]).encode()).hexdigest()[:20]
        try:
            with open(Path(os.environ[FLAKY_DIR]) / digest, "x"):
                pass
        except FileExistsError:
            pass
        else:
            raise BackendError("HTTP 503 after 4 attempts (simulated)")
    return solver(messages)


def scores_by(results: list[TaskResult]) -> dict[tuple[str, str, int], float]:
    """Mean score per (config, family, context length)."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in results:
        groups.setdefault((r.config, r.family, r.context_length), []).append(r.score)
    return {k: sum(v) / len(v) for k, v in groups.items()}


# -- the stand-in really solves the suites, the plain baseline does not ----------------------


def test_rlm_solves_every_bundled_family_and_the_plain_baseline_falls_behind(
    tmp_path: Path,
) -> None:
    done = run("all", STAND_IN, n=3, lengths=[8192, 32768], baseline=True, out_dir=tmp_path / "out")
    assert [c.name for c in done.configs] == ["rlm", "rlm-plain"]
    assert len(done.results) == 2 * 4 * 2 * 3
    assert not [r for r in done.results if r.error_type]
    by = scores_by(done.results)
    for family in ("niah", "oolong", "oolong_pairs", "codeqa"):
        assert by["rlm", family, 8192] == by["rlm", family, 32768] == 1.0
        assert by["rlm-plain", family, 8192] == 1.0  # fits the stand-in's 16k window
    plain_long = [by["rlm-plain", f, 32768] for f in ("niah", "oolong", "oolong_pairs", "codeqa")]
    assert sum(plain_long) / 4 < 0.8
    assert done.scores()["rlm"] == 1.0 > done.scores()["rlm-plain"]
    rlm_calls = [r.calls for r in done.results if r.config == "rlm"]
    assert min(rlm_calls) >= 2  # root turns; sub-calls where the family needs them
    assert all(r.calls == 1 for r in done.results if r.config == "rlm-plain")
    assert all(r.input_tokens > 0 and r.log_file for r in done.results)


def test_trajectories_go_through_the_rlm_logger(tmp_path: Path) -> None:
    done = run("niah", STAND_IN, n=1, lengths=[4096], baseline=True, out_dir=tmp_path)
    rlm_result, plain_result = done.results
    rlm_log = [json.loads(line) for line in Path(str(rlm_result.log_file)).read_text().splitlines()]
    assert rlm_log[0]["type"] == "metadata" and rlm_log[0]["backend"] == "scripted"
    iterations = [e for e in rlm_log if e["type"] == "iteration"]
    assert len(iterations) == 2
    assert "re.finditer" in iterations[1]["code_blocks"][0]["code"]
    assert Path(str(rlm_result.log_file)).parent == tmp_path / "trajectories" / "rlm"
    plain_log = Path(str(plain_result.log_file)).read_text().splitlines()
    entry = json.loads(plain_log[-1])
    assert "<context: " in entry["prompt"][0]["content"]  # the context itself is not copied
    assert entry["response"] == plain_result.prediction


def test_in_memory_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = run([{"context": "The code is 7781.", "question": "Code?", "answer": "7781"}], STAND_IN)
    assert done.out_dir is None and done.plot_path is None
    assert done.results[0].prediction == "unknown"  # the stand-in only knows the bundled suites
    assert done.results[0].score == 0.0
    assert list(tmp_path.iterdir()) == []


# -- resuming --------------------------------------------------------------------------------


def test_rerun_skips_stored_results(tmp_path: Path) -> None:
    first = run("oolong", STAND_IN, n=2, lengths=[4096], out_dir=tmp_path)
    assert (first.ran, first.resumed) == (2, 0)
    again = run("oolong", STAND_IN, n=4, lengths=[4096], out_dir=tmp_path)
    assert (again.ran, again.resumed) == (2, 2)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    keys = Counter((json.loads(line)["config"], json.loads(line)["task_id"]) for line in lines)
    assert len(keys) == 4 and set(keys.values()) == {1}


def test_a_line_cut_short_is_ignored_and_its_task_runs_again(tmp_path: Path) -> None:
    run("niah", STAND_IN, n=2, lengths=[2048], out_dir=tmp_path)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    again = run("niah", STAND_IN, n=2, lengths=[2048], out_dir=tmp_path)
    assert (again.ran, again.resumed) == (1, 1)
    good = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
    assert sorted(r["task_id"] for r in good) == ["niah-2k-0000", "niah-2k-0001"]


def test_a_changed_configuration_may_not_reuse_the_directory(tmp_path: Path) -> None:
    run("niah", STAND_IN, n=1, lengths=[2048], out_dir=tmp_path)
    changed = dict(STAND_IN, max_iterations=7)
    with pytest.raises(ConfigurationError, match="'rlm' differs"):
        run("niah", changed, n=1, lengths=[2048], out_dir=tmp_path)
    renamed = dict(changed, name="rlm-7")
    assert run("niah", renamed, n=1, lengths=[2048], out_dir=tmp_path).ran == 1


def test_one_writer_per_directory(tmp_path: Path) -> None:
    with ResultStore(tmp_path), pytest.raises(ConfigurationError, match="another run"):
        ResultStore(tmp_path)
    ResultStore(tmp_path).close()  # released


# -- configurations --------------------------------------------------------------------------


def test_toml_configuration(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(
        'backend = "openai"\nmodel = "m1"\nmax_depth = 2\nrate_limit = 3\n'
        '[backend_kwargs]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-secret"\n'
    )
    config = load_config(path)
    assert config.name == "small"
    assert config.backend_kwargs == {
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-secret",
        "model_name": "m1",
    }
    assert config.rlm_kwargs == {"max_depth": 2}
    assert config.provider == "openai|http://127.0.0.1:9/v1"
    arguments = config.rlm_arguments()
    assert arguments["backend"] == "rate_limited"
    assert arguments["backend_kwargs"]["backend_kwargs"]["model_name"] == "m1"
    assert "sk-secret" not in json.dumps(config.public_dict())
    assert config.plain().rlm_arguments()["max_depth"] == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backend": "scripted", "max_iteration": 3}, "unknown configuration key 'max_iteration'"),
        ({"mode": "chat"}, "mode must be 'rlm' or 'plain'"),
        ({"rate_limit": 0}, "rate_limit must be a number greater than 0"),
    ],
)
def test_bad_configurations(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config_from_dict(data, "c", "c.toml")


def test_configurations_are_checked_before_any_task_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_iterations"):
        run("niah", {"backend": "scripted", "max_iterations": 0}, out_dir=tmp_path / "a")
    with pytest.raises(ConfigurationError, match="two configurations are named 'x'"):
        run("niah", [dict(STAND_IN, name="x"), dict(STAND_IN, name="x")])
    assert not (tmp_path / "a").exists()


# -- retries, errors, rate limits ------------------------------------------------------------


def test_retryable_failures_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FLAKY_DIR, str(tmp_path))
    flaky = dict(STAND_IN, backend_kwargs={"responses": "test_eval_run:flaky_solver"})
    done = run("niah", flaky, n=3, lengths=[2048], concurrency=2)
    assert [r.attempts for r in done.results] == [2, 2, 2]
    assert [r.score for r in done.results] == [1.0, 1.0, 1.0]
    assert len(list(tmp_path.iterdir())) == 3
    assert {p.read_text() for p in tmp_path.iterdir()} == {""}  # one marker per task
    for path in tmp_path.iterdir():
        path.unlink()
    failing = run("niah", flaky, n=1, lengths=[2048], retries=0)
    (result,) = failing.results
    assert (result.error_type, result.retryable, result.score) == ("BackendError", True, 0.0)
    assert failing.summary.configs[0].error_types == {"BackendError": 1}


def test_errors_are_results_counted_by_type() -> None:
    tasks = [
        {"id": "ok", "generator": "niah", "context_length": 1024, "seed": 1},
        {"id": "bad", "context_file": "/nonexistent/file.txt", "question": "q", "answer": "a"},
    ]
    done = run(tasks, dict(STAND_IN, max_timeout=60))
    by_id = {r.task_id: r for r in done.results}
    assert by_id["ok"].score == 1.0
    assert (by_id["bad"].error_type, by_id["bad"].score) == ("TaskError", 0.0)
    assert "errors by type | TaskError: 1 |" in done.to_markdown()


def test_token_bucket_reserves_slots_in_order() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0
    assert bucket.reserve() == 0.0
    assert bucket.stats()["reserved"] == 5


def test_local_rate_limit_sees_every_lm_call() -> None:
    limited = dict(STAND_IN, rate_limit=10_000)
    done = run("oolong", limited, n=3, lengths=[4096], baseline=True)
    (stats,) = done.limiter_stats.values()
    assert stats["reserved"] == sum(r.calls for r in done.results) > 6
    assert all(r.score == 1.0 for r in done.results)


def test_ray_task_options_follow_the_nodes() -> None:
    class FakeRay:
        def __init__(self, nodes: list[dict[str, Any]]) -> None:
            self._nodes = nodes

        def nodes(self) -> list[dict[str, Any]]:
            return self._nodes

    engine = RayEngine()
    plain = FakeRay(
        [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0}}]
    )
    assert engine._task_options(plain, 16) == {"num_cpus": 0.25}
    slots = FakeRay([{"Alive": True, "Resources": {"CPU": 8.0, SLOT_RESOURCE: 32.0}}])
    assert engine._task_options(slots, 16) == {"num_cpus": 0, "resources": {SLOT_RESOURCE: 1}}


# -- report, plot, progress ------------------------------------------------------------------


def _result(config: str, score: float, latency: float, error: str | None = None) -> TaskResult:
    return TaskResult(
        config, f"t{latency}", "niah", 8192, score, "x", "x", "exact", latency,
        input_tokens=10, output_tokens=2, calls=1, cost=0.5, error_type=error,
    )  # fmt: skip


def test_summary_side_by_side() -> None:
    results = [_result("a", 1.0, t) for t in (1.0, 2.0, 3.0, 4.0)] + [
        _result("b", 0.0, 1.0, "BackendError")
    ]
    summary = summarize(results, ["a", "b"])
    a, b = summary.configs
    assert (a.tasks, a.score, a.cost, a.input_tokens, a.calls) == (4, 1.0, 2.0, 40, 4)
    assert a.latency_p50 == 2.5 and a.latency_p95 == pytest.approx(3.85)
    assert b.error_types == {"BackendError": 1}
    markdown = summary.to_markdown()
    assert "| | a | b |" in markdown
    assert "| score (mean) | 1.000 | 0.000 |" in markdown
    assert "| niah | 8k | 1.000 | 0.000 |" in markdown


def test_plot_is_a_png_and_missing_matplotlib_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = summarize([_result("a", 1.0, 1.0)], ["a"])
    path, message = plot_scores(summary, tmp_path / "p.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert message == f"plot: {path}"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot_scores(summary, tmp_path / "q.png") == (None, MISSING)
    assert not (tmp_path / "q.png").exists()


def test_progress_prints_plain_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    now = [0.0]
    progress = Progress(total=40, done=10, stream=stream, clock=lambda: now[0])
    for i in range(30):
        now[0] += 0.5
        progress.advance(_result("a", 1.0, 1.0, "BackendError" if i == 0 else None))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 15 and "\r" not in stream.getvalue()
    assert lines[-1] == f"[{'#' * 30}] 40/40 100% 2.0 tasks/s eta 0:00:00, 1 error"


def test_run_task_never_raises_for_a_failing_lm() -> None:
    task = load_suite("niah", n=1, lengths=[1024]).tasks[0]
    broken = config_from_dict(
        {"backend": "scripted", "backend_kwargs": {"responses": []}}, "broken", "x"
    )
    result = run_task(task, broken)
    assert (result.error_type, result.score, result.retryable) == (
        "ScriptExhaustedError",
        0.0,
        False,
    )


# -- the command -----------------------------------------------------------------------------


def rlm_eval(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, "-m", "rlm_core.cli", "eval", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def test_rlm_eval_bundled_suite_with_baseline(tmp_path: Path) -> None:
    proc = rlm_eval("builtin:codeqa", "--backend", "scripted", "--baseline", "-n", "2",
                    "--lengths", "8k,32k", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "rlm-eval" / "codeqa"
    assert "| | scripted | scripted-plain |" in proc.stdout
    assert "| codeqa | 32k | 1.000 |" in proc.stdout
    assert (out / "summary.md").read_text().strip() == proc.stdout.strip()
    assert (out / "scores.png").exists()
    assert len((out / "results.jsonl").read_text().splitlines()) == 8
    assert "8 tasks run, 0 already done" in proc.stderr
    assert "[" + "#" * 30 + "] 8/8 100%" in proc.stderr  # plain progress lines off a terminal


def test_rlm_eval_writes_a_suite_then_runs_the_file(tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    proc = rlm_eval("niah", "-n", "3", "--lengths", "2k", "--write-suite", str(suite), cwd=tmp_path)
    assert proc.returncode == 0 and "wrote 3 tasks" in proc.stderr
    config = tmp_path / "stand-in.toml"
    config.write_text('backend = "scripted"\nmax_iterations = 5\n')
    proc = rlm_eval(str(suite), "--config", str(config), "--out", "o", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| score (mean) | 1.000 |" in proc.stdout
    assert not (tmp_path / "o" / "scores.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["niah"], "pass --config FILE, or --model NAME"),
        (["niah", "--backend", "scripted", "--lengths", "8q"], "context length '8q'"),
        (["nosuch.jsonl", "--backend", "scripted"], "no suite file 'nosuch.jsonl'"),
        (["niah", "--config", "missing.toml"], "cannot read configuration missing.toml"),
        (["niah", "--config", "c.toml", "--model", "m"], "--model cannot be combined"),
    ],
)
def test_rlm_eval_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = rlm_eval(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rlm: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_killed_run_continues_without_repeating_finished_tasks(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(
        'name = "slow"\nbackend = "scripted"\n[backend_kwargs]\n'
        'responses = "test_eval_run:slow_solver"\n'
    )
    args = ["niah", "--config", str(config), "-n", "10", "--lengths", "2k,4k",
            "--concurrency", "2", "--out", "run", "--no-plot"]  # fmt: skip
    results = tmp_path / "run" / "results.jsonl"
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    process = subprocess.Popen(
        [sys.executable, "-m", "rlm_core.cli", "eval", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and len(results.read_bytes().splitlines()) >= 5:
                break
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    before = results.read_bytes()
    done_before = len([line for line in before.splitlines() if line.endswith(b"}")])
    assert 5 <= done_before < 20, "the run was not stopped halfway"

    proc = rlm_eval(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{20 - done_before} tasks run, {done_before} already done" in proc.stderr
    after = results.read_bytes()
    assert after.startswith(before.rstrip(b"\n").rsplit(b"\n", 1)[0])  # nothing rewritten
    records = [json.loads(line) for line in after.splitlines() if line.endswith(b"}")]
    keys = Counter((r["config"], r["task_id"]) for r in records)
    assert len(keys) == 20 and set(keys.values()) == {1}
    assert all(r["score"] == 1.0 for r in records)
