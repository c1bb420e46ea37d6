"""The Ray engine on a local Ray cluster that this module starts on 127.0.0.1 and stops,
checking that none of its processes is left behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hosts import kill_all, wait_gone
from test_cli import cli_env
from test_eval_run import FLAKY_DIR, STAND_IN, TESTS

from rlm_core.eval import run

ray = pytest.importorskip("ray")


def descendants() -> set[int]:
    """Every process below this one."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """One local Ray cluster (2 CPUs, no dashboard, loopback only) for this module."""
    temp = tempfile.mkdtemp(prefix="rlm-ray-")  # short: Ray's socket paths live under it
    flaky = Path(temp) / "flaky"
    flaky.mkdir()
    settings = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray then binds the node to 127.0.0.1
        "RAY_AUTH_TOKEN": secrets.token_hex(16),  # token auth, with no file under ~/.ray
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        FLAKY_DIR: str(flaky),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        patch.delenv("RAY_AUTH_MODE", raising=False)  # ray.init sets it: undone afterwards
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        before = descendants()
        try:
            context = ray.init(
                num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False
            )
            yield {"address": context.address_info["address"], "flaky": flaky}
        finally:
            started = descendants() - before
            ray.shutdown()
            left = wait_gone(sorted(started), bound=30)
            kill_all(left)
            shutil.rmtree(temp, ignore_errors=True)
            assert not left, f"Ray processes left running: {left}"


def test_cluster_is_on_loopback(cluster: dict[str, Any]) -> None:
    assert cluster["address"].startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}


def test_local_and_ray_give_identical_scores(cluster: dict[str, Any], tmp_path: Path) -> None:
    arguments: dict[str, Any] = {"n": 2, "lengths": [8192, 32768], "baseline": True}
    local = run("all", STAND_IN, "local", out_dir=tmp_path / "local", **arguments)
    on_ray = run("all", STAND_IN, "ray", out_dir=tmp_path / "ray", concurrency=2, **arguments)
    assert len(local.results) == len(on_ray.results) == 32
    assert {r.key: r.score for r in on_ray.results} == {r.key: r.score for r in local.results}
    assert {r.key: r.prediction for r in on_ray.results} == {
        r.key: r.prediction for r in local.results
    }
    assert on_ray.scores()["rlm"] == 1.0 > on_ray.scores()["rlm-plain"]
    workers = {r.worker for r in on_ray.results}
    assert f":{os.getpid()}" not in "".join(workers)  # ran in Ray's worker processes
    stored = (tmp_path / "ray" / "results.jsonl").read_text().splitlines()
    assert len(stored) == 32
    assert all(Path(str(r.log_file)).exists() for r in on_ray.results)


def test_one_rate_limiter_for_the_whole_cluster(cluster: dict[str, Any]) -> None:
    configs = [dict(STAND_IN, rate_limit=10_000), dict(STAND_IN, name="again", rate_limit=5_000)]
    done = run("oolong", configs, "ray", n=2, lengths=[4096], concurrency=2)
    assert list(done.limiter_stats) == ["scripted|"]  # both configurations, one provider
    stats = done.limiter_stats["scripted|"]
    assert stats["rate"] == 5_000
    assert stats["reserved"] == sum(r.calls for r in done.results) > 4
    assert len({r.worker for r in done.results}) >= 1


def test_ray_retries_failed_tasks(cluster: dict[str, Any]) -> None:
    flaky = dict(STAND_IN, backend_kwargs={"responses": "test_eval_run:flaky_solver"})
    done = run("niah", flaky, "ray", n=3, lengths=[2048], concurrency=2)
    assert [r.attempts for r in done.results] == [2, 2, 2]
    assert [r.score for r in done.results] == [1.0, 1.0, 1.0]
    assert len(list(cluster["flaky"].iterdir())) == 3


def test_rlm_eval_command_gives_the_same_scores_on_both_engines(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    common = ["all", "--backend", "scripted", "--baseline", "-n", "1", "--lengths", "8k,32k",
              "--no-plot"]  # fmt: skip
    scores = {}
    for engine in ("local", "ray"):
        args = [*common, "--engine", engine, "--out", engine]
        if engine == "ray":
            args += ["--address", cluster["address"], "--concurrency", "2"]
        proc = subprocess.run(
            [sys.executable, "-m", "rlm_core.cli", "eval", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "| score (mean) | 1.000 |" in proc.stdout
        lines = (tmp_path / engine / "results.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        scores[engine] = {(r["config"], r["task_id"]): r["score"] for r in records}
    assert len(scores["ray"]) == 16
    assert scores["ray"] == scores["local"]
    assert ray.is_initialized()  # the command's own driver left the cluster running
