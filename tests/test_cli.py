"""The ``rlm`` command, run in real subprocesses (``python -m rlm_core.cli``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lm_server import LMServer, openai_server  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
SCRUBBED = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "OPENROUTER_API_KEY",
    "AI_GATEWAY_API_KEY",
    "RLM_DEMO_MODEL",
)
PROVIDER_SDKS = {"openai", "anthropic", "modal", "e2b", "daytona", "prime_sandboxes"}


def cli_env() -> dict[str, str]:
    """The test process's environment without credentials or endpoints."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_python(
    args: list[str], stdin: str = "", timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the repository root with :func:`cli_env`."""
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(),
        timeout=timeout,
    )


def rlm(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``rlm ARGS`` in a subprocess."""
    return run_python(["-m", "rlm_core.cli", *args], stdin=stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The command failed with ``code`` and one ``rlm: error:`` line, no traceback."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rlm: error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def root_or_sub(body: dict[str, Any]) -> str:
    """``"root"`` when the request carries the RLM system prompt, else ``"sub"``."""
    messages = body.get("messages") or []
    return "root" if messages and messages[0].get("role") == "system" else "sub"


ROOT_REPLY = """I will ask a sub-LM and report the context size.

```repl
said = llm_query("Greet the reader of: " + str(context)[:40])
size = len(context)
answer["content"] = f"{type(context).__name__} of {size}; sub-LM said: {said}"
answer["ready"] = True
```"""


def scripted_server(server: LMServer) -> None:
    """Make the server play a tiny RLM: one root cell with one sub-call."""
    server.reply = lambda body: ROOT_REPLY if root_or_sub(body) == "root" else "hello there"


# -- run against the local OpenAI-compatible server -------------------------------------


def test_run_with_one_file(openai_server: LMServer, tmp_path: Path) -> None:  # noqa: F811
    scripted_server(openai_server)
    doc = tmp_path / "doc.txt"
    doc.write_text("x" * 1234, encoding="utf-8")
    proc = rlm(
        "run",
        "How long is it?",
        "--context",
        str(doc),
        "--base-url",
        openai_server.base_url,
        "--model",
        "test-model",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "str of 1234; sub-LM said: hello there"
    bodies = openai_server.bodies
    assert len(bodies) == 2
    assert [root_or_sub(b) for b in bodies] == ["root", "sub"]
    assert {b["model"] for b in bodies} == {"test-model"}
    assert "How long is it?" in json.dumps(bodies[0]["messages"])


def test_run_with_several_files_gives_a_list(openai_server: LMServer, tmp_path: Path) -> None:  # noqa: F811
    scripted_server(openai_server)
    paths = []
    for i in range(3):
        path = tmp_path / f"part{i}.txt"
        path.write_text(f"part {i}", encoding="utf-8")
        paths.append(str(path))
    proc = rlm(
        "run", "q", "--context", *paths, "--base-url", openai_server.base_url, "--model", "m"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "list of 3; sub-LM said: hello there"


@pytest.mark.parametrize("context_args", [[], ["--context", "-"]])
def test_run_reads_stdin(
    openai_server: LMServer,  # noqa: F811
    context_args: list[str],
) -> None:
    scripted_server(openai_server)
    proc = rlm(
        "run",
        "q",
        *context_args,
        "--base-url",
        openai_server.base_url,
        "--model",
        "m",
        stdin="from stdin\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "str of 11; sub-LM said: hello there"


def test_run_writes_a_log(openai_server: LMServer, tmp_path: Path) -> None:  # noqa: F811
    scripted_server(openai_server)
    logs = tmp_path / "logs"
    proc = rlm(
        "run",
        "q",
        "--base-url",
        openai_server.base_url,
        "--model",
        "m",
        "--log-dir",
        str(logs),
        stdin="abc",
    )
    assert proc.returncode == 0, proc.stderr
    files = list(logs.glob("*.jsonl"))
    assert len(files) == 1
    entries = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [e["type"] for e in entries] == ["metadata", "iteration"]
    assert str(files[0]) in proc.stderr


def test_limit_exits_3_with_partial_answer(openai_server: LMServer) -> None:  # noqa: F811
    openai_server.reply = lambda body: "Trying.\n\n```repl\n1 / 0\n```"
    proc = rlm(
        "run",
        "q",
        "--base-url",
        openai_server.base_url,
        "--model",
        "m",
        "--max-errors",
        "1",
        stdin="c",
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("rlm: error: Error threshold exceeded")
    assert "Traceback" not in proc.stderr
    assert "1 / 0" in proc.stdout  # the best answer so far: the last reply


# -- errors -----------------------------------------------------------------------------


def test_missing_context_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    proc = rlm("run", "q", "--context", str(missing), "--base-url", "http://127.0.0.1:9/v1")
    line = assert_one_line_error(proc)
    assert f"context file not found: {missing}" in line
    assert proc.stdout == ""


UNINSTALLED = ("acme-cloud", "rlm-acme-cloud")
"""A provider environment rlm-core knows of, by name and distribution, whose plugin is not
installed (here every real provider's plugin may be)."""


def rlm_knowing_uninstalled(*args: str) -> subprocess.CompletedProcess[str]:
    """``rlm ARGS`` in a subprocess whose rlm-core knows of the :data:`UNINSTALLED` provider."""
    name, dist = UNINSTALLED
    code = (
        "import runpy, sys; import rlm_core.plugins as plugins; "
        f"plugins.PROVIDER_DISTRIBUTIONS[{name!r}] = {dist!r}; "
        "runpy.run_module('rlm_core.cli', run_name='__main__')"
    )
    return run_python(["-c", code, *args], stdin="ctx")


def test_unknown_environment_names_the_plugin_to_install() -> None:
    name, dist = UNINSTALLED
    proc = rlm_knowing_uninstalled("run", "q", "--environment", name)
    line = assert_one_line_error(proc)
    assert f"pip install {dist}" in line


def test_missing_api_key_is_a_one_line_error() -> None:
    proc = rlm("run", "q", "--backend", "openai", stdin="ctx")
    line = assert_one_line_error(proc)
    assert "OPENAI_API_KEY" in line


def test_scripted_backend_from_the_command_line_explains_itself() -> None:
    proc = rlm("run", "q", "--backend", "scripted", stdin="ctx")
    line = assert_one_line_error(proc)
    assert "scripted" in line


def test_run_help_says_scripted_is_not_a_model() -> None:
    proc = rlm("run", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "'scripted' is a deterministic test stand-in LM, not a model" in text
    for flag in ("--context", "--backend", "--model", "--base-url", "--environment"):
        assert flag in text
    for flag in ("--max-depth", "--max-iterations", "--log-dir", "--verbose"):
        assert flag in text


# -- listings ---------------------------------------------------------------------------


def test_environments_lists_local_without_importing_sdks() -> None:
    snippet = (
        "import sys\n"
        "from rlm_core.cli import main\n"
        "code = main(['environments'])\n"
        "code += main(['backends'])\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(PROVIDER_SDKS)!r}))\n"
        "raise SystemExit(code)\n"
    )
    proc = run_python(["-c", snippet])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "[]"
    local = next(line for line in lines if line.startswith("local "))
    assert "rlm-core (built-in)" in local
    assert "subcalls" in local
    assert any(line.startswith("scripted ") for line in lines)
    assert any(line.startswith("openai ") for line in lines)


def test_environments_subprocess_table() -> None:
    proc = rlm_knowing_uninstalled("environments")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ["NAME", "DISTRIBUTION", "VERSION", "CAPABILITIES"]
    assert f"{UNINSTALLED[0]}  pip install {UNINSTALLED[1]}" in proc.stdout


def test_backends_table() -> None:
    proc = rlm("backends")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["NAME", "DISTRIBUTION", "VERSION"]
    assert any(line.startswith("scripted ") for line in proc.stdout.splitlines())


def test_missing_model_names_the_flag(openai_server: LMServer) -> None:  # noqa: F811
    proc = rlm("run", "q", "--base-url", openai_server.base_url, stdin="ctx")
    line = assert_one_line_error(proc)
    assert "--model" in line


def test_no_command_is_a_usage_error() -> None:
    proc = rlm()
    assert proc.returncode == 2
    assert "usage: rlm" in proc.stderr
