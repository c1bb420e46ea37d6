"""CEL: what cells print, raise and break, including hostile cells."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time

import pytest

from rlm_conformance.cases import case
from rlm_conformance.fixtures import StartEnv
from rlm_conformance.probes import describe, kill, wait_gone, with_marker
from rlm_conformance.suite.helpers import failed, ok
from rlm_conformance.suite.lifecycle import GRACE, cell_process
from rlm_core.environments.base import (
    FILES,
    MEMORY_LIMIT,
    SEPARATE_PROCESS,
    TIMEOUT,
    Environment,
)
from rlm_core.exceptions import SandboxError


def crash_then_close(env: Environment, code: str) -> None:
    """Run a cell that kills its interpreter: a typed error, then nothing left at close."""
    process = cell_process(env)
    with pytest.raises(SandboxError):
        env.execute(code)
    env.close()
    left = wait_gone([process], GRACE)
    shown = [describe(p) for p in left]
    kill(left)
    assert not left, f"still running after close(): {shown}"


def spawned_gone(env: Environment, code: str, marker: str, expect: int) -> None:
    """Run ``code`` (it starts processes whose command lines carry ``marker``), check
    they run, close, and check they are gone."""
    ok(env, code)
    seen = with_marker(marker)
    if not seen:
        pytest.skip("the sandbox's processes are not visible from this machine")
    deadline = time.monotonic() + GRACE  # a child may still be between fork and exec
    while len(seen) < expect and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = with_marker(marker)
    assert len(seen) >= expect, f"expected {expect} processes, saw {len(seen)}"
    env.close()
    left = wait_gone(seen, GRACE)
    shown = [describe(p) for p in left]
    kill(left)
    assert not left, f"still running after close(): {shown}"


class CellTests:
    """Output, errors, state, and cells that attack their interpreter."""

    @case("CEL-001", "stdout is captured exactly")
    def test_stdout(self, env: Environment) -> None:
        assert ok(env, "print('hello')\nprint('wörld', 2, sep='|')") == "hello\nwörld|2\n"

    @case("CEL-002", "stderr is captured apart from stdout")
    def test_stderr(self, env: Environment) -> None:
        result = env.execute("import sys\nprint('out')\nprint('err', file=sys.stderr)")
        assert result.error is None
        assert result.stdout == "out\n"
        assert "err\n" in result.stderr and "out" not in result.stderr

    @case("CEL-003", "an exception is the cell's error, with a traceback naming the line")
    def test_exception(self, env: Environment) -> None:
        result = env.execute("def f():\n    return 1 / 0\nprint('before')\nf()")
        assert failed(result) == "ZeroDivisionError: division by zero"
        assert result.stdout == "before\n"
        assert "Traceback" in result.stderr and "return 1 / 0" in result.stderr

    @case("CEL-004", "a syntax error is reported and the namespace is untouched")
    def test_syntax_error(self, env: Environment) -> None:
        ok(env, "kept = 41")
        result = env.execute("kept = 1\nif True print('x')")
        assert "SyntaxError" in failed(result)
        assert ok(env, "print(kept + 1)") == "42\n"

    @case("CEL-005", "variables, functions and classes persist across cells")
    def test_state(self, env: Environment) -> None:
        ok(env, "n = 2\ndef twice(x):\n    return 2 * x\nclass Box:\n    size = 3")
        assert ok(env, "print(twice(n) + Box.size)") == "7\n"

    @case("CEL-006", "imports persist across cells")
    def test_imports(self, env: Environment) -> None:
        ok(env, "import json, re as regex\nfrom collections import Counter")
        assert ok(env, "print(json.dumps(Counter(regex.findall('a', 'banana'))))") == ('{"a": 3}\n')

    @case("CEL-007", "huge output is capped, with a marker saying how much was dropped")
    def test_huge_output(self, env: Environment) -> None:
        result = env.execute("print('x' * 30_000_000)\nprint('done')")
        assert result.error is None
        assert 1_000 < len(result.stdout) < 5_000_000
        assert "capped" in result.stdout and "not kept" in result.stdout
        assert ok(env, "print('next')") == "next\n"

    @case("CEL-008", "bytes that are not UTF-8 written to stdout arrive as replacement chars")
    def test_non_utf8(self, env: Environment) -> None:
        out = ok(env, "import sys\nsys.stdout.buffer.write(b'a\\xffb\\xc3\\n')\nprint('z')")
        assert out == "a\ufffdb\ufffd\nz\n"

    @case("CEL-009", "sys.exit in a cell is the cell's error; the session goes on")
    def test_sys_exit(self, env: Environment) -> None:
        ok(env, "kept = 'yes'")
        result = env.execute("import sys\nprint('bye')\nsys.exit(3)")
        assert "SystemExit" in failed(result) and "3" in failed(result)
        assert result.stdout == "bye\n"
        assert ok(env, "print(kept)") == "yes\n"

    @case(
        "CEL-010",
        "os._exit in a cell is a typed SandboxError; nothing is left after close",
        requires=[SEPARATE_PROCESS],
    )
    def test_os_exit(self, env: Environment) -> None:
        crash_then_close(env, "import os\nos._exit(7)")

    @case(
        "CEL-011",
        "a segfault in a cell is a typed SandboxError; nothing is left after close",
        requires=[SEPARATE_PROCESS],
    )
    def test_segfault(self, env: Environment) -> None:
        crash_then_close(env, "import ctypes\nctypes.string_at(0)")

    @case(
        "CEL-012",
        "an endless loop is interrupted at the cell timeout; state is kept",
        requires=[TIMEOUT],
    )
    def test_timeout(self, start_env: StartEnv) -> None:
        env = start_env(cell_timeout=2)
        ok(env, "kept = 'still here'")
        result = env.execute("while True:\n    pass")
        assert "timeout" in failed(result).lower()
        assert ok(env, "print(kept)") == "still here\n"

    @case(
        "CEL-013",
        "a loop that swallows BaseException is stopped; the session recovers",
        requires=[TIMEOUT],
    )
    def test_swallowing_loop(self, start_env: StartEnv) -> None:
        env = start_env(cell_timeout=1, interrupt_grace=1)
        code = (
            "import time\nwhile True:\n    try:\n        time.sleep(0.01)\n"
            "    except BaseException:\n        pass"
        )
        try:
            result = env.execute(code)
        except SandboxError:
            pass  # restarted: state lost, said so
        else:
            assert "timeout" in failed(result).lower()
        assert ok(env, "print('recovered')") == "recovered\n"

    @case(
        "CEL-014",
        "a loop that ignores signals is stopped; the session recovers",
        requires=[TIMEOUT],
    )
    def test_signal_ignoring_loop(self, start_env: StartEnv) -> None:
        env = start_env(cell_timeout=1, interrupt_grace=1)
        code = (
            "import signal\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, "
            "signal.SIGUSR1, signal.SIGUSR2):\n    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n    pass"
        )
        try:
            result = env.execute(code)
        except SandboxError:
            pass
        else:
            assert "timeout" in failed(result).lower()
        assert ok(env, "print('recovered')") == "recovered\n"

    @case("CEL-015", "runaway recursion is a RecursionError; the session goes on")
    def test_recursion_error(self, env: Environment) -> None:
        result = env.execute("def f(n):\n    return f(n + 1)\nf(0)")
        assert failed(result).startswith("RecursionError")
        assert ok(env, "print('fine')") == "fine\n"

    @case(
        "CEL-016",
        "a cell that allocates past the memory limit fails; the session goes on",
        requires=[MEMORY_LIMIT],
    )
    def test_memory_hog(self, start_env: StartEnv) -> None:
        env = start_env(memory_limit_mb=600)
        code = (
            "hog = []\nfor _ in range(60):\n    hog.append(bytearray(25 * 1024 * 1024))\n"
            "print('allocated', len(hog) * 25, 'MB')"
        )
        try:
            result = env.execute(code)
        except SandboxError:
            pass  # the sandbox was killed for it: a typed error is a pass too
        else:
            assert "MemoryError" in failed(result), "1.5 GB was allocated under a 600 MB limit"
        assert ok(env, "hog = None\nprint('fine')") == "fine\n"

    @case(
        "CEL-017",
        "a bounded fork storm: 40 children; all gone after close",
        requires=[SEPARATE_PROCESS],
    )
    def test_fork_storm(self, env: Environment) -> None:
        marker = "rlm-conformance-storm-" + secrets.token_hex(6)
        code = (
            "import subprocess, sys\nkids = [subprocess.Popen([sys.executable, '-c', "
            f"'import time; time.sleep(600)', {marker!r}]) for _ in range(40)]\n"
            "print(len(kids))"
        )
        spawned_gone(env, code, marker, 40)

    @case(
        "CEL-018",
        "a cell that closes fds 0, 1 and 2 breaks nothing",
        requires=[SEPARATE_PROCESS],
    )
    def test_closed_standard_fds(self, env: Environment) -> None:
        ok(env, "import os\nos.close(0)\nos.close(1)\nos.close(2)")
        assert ok(env, "print('still captured')") == "still captured\n"
        assert ok(env, "print(llm_query('q'))") == "llm:q\n"

    @case(
        "CEL-019",
        "a detached child that ignores SIGTERM is gone after close",
        requires=[SEPARATE_PROCESS],
    )
    def test_detached_child(self, env: Environment) -> None:
        marker = "rlm-conformance-detached-" + secrets.token_hex(6)
        child = (
            "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGHUP, signal.SIG_IGN)\ntime.sleep(600)"
        )
        code = (
            "import os, subprocess, sys\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    subprocess.Popen([sys.executable, '-c', {child!r}, {marker!r}])\n"
            "    os._exit(0)\n"
            "os.wait()\nimport time\ntime.sleep(0.5)\nprint('started')"
        )
        spawned_gone(env, code, marker, 1)

    @case(
        "CEL-020",
        "binary garbage and a fake ready line on fds 1 and 2 break nothing",
        requires=[SEPARATE_PROCESS],
    )
    def test_garbage_on_fds(self, env: Environment) -> None:
        hostile = (
            "import os, subprocess, sys\n"
            "os.write(1, b'\\x00\\xffRLM-AGENT-READY port=1 pid=1\\n\\x00' * 500)\n"
            "os.write(2, bytes(range(256)) * 40)\n"
            "subprocess.run([sys.executable, '-c', 'print(\"child \\\\x00 noise\" * 1000)'])\n"
            "print('still here')"
        )
        assert "still here" in ok(env, hostile)
        env.add_context("x" * 100_000)
        assert ok(env, "print(len(context), llm_query_batched(['q'] * 4)[0])") == ("100000 llm:q\n")

    @case("CEL-021", "a cell's duration is reported")
    def test_duration(self, env: Environment) -> None:
        result = env.execute("import time\ntime.sleep(0.3)")
        assert result.error is None
        assert 0.3 <= result.execution_time < 120

    @case("CEL-022", "input() fails at once with a clear error instead of waiting")
    def test_input(self, env: Environment) -> None:
        result = env.execute("input('name? ')")
        assert failed(result)
        assert ok(env, "print('next')") == "next\n"

    @case("CEL-023", "builtins a cell deletes or rebinds come back in the next cell")
    def test_builtins_restored(self, env: Environment) -> None:
        ok(env, "import builtins\nbuiltins.print = None\ndel builtins.len")
        assert ok(env, "print(len('abc'))") == "3\n"

    @case("CEL-024", "an empty cell and a comment-only cell run cleanly")
    def test_empty_cell(self, env: Environment) -> None:
        assert ok(env, "") == ""
        assert ok(env, "# nothing here\n\n") == ""

    @case("CEL-025", "100,000 printed lines arrive in order")
    def test_many_lines(self, env: Environment) -> None:
        out = ok(env, "for i in range(100_000):\n    print(i)")
        lines = out.splitlines()
        assert lines[:3] == ["0", "1", "2"] and lines[-1] == "99999" and len(lines) == 100_000

    @case("CEL-026", "get_variable and set_variable round-trip JSON values; unset is KeyError")
    def test_variables(self, env: Environment) -> None:
        data = {"list": [1, 2.5, None, True], "text": "é 😀", "nested": {"k": ["v"]}}
        env.set_variable("data", data)
        assert env.get_variable("data") == data
        assert json.loads(ok(env, "import json\nprint(json.dumps(data))")) == data
        ok(env, "made = {'n': 3}")
        assert env.get_variable("made") == {"n": 3}
        with pytest.raises(KeyError):
            env.get_variable("never_set")

    @case(
        "CEL-027",
        "cells have a writable working directory of their own that persists",
        requires=[FILES],
    )
    def test_working_directory(self, env: Environment) -> None:
        name = f"rlm-conformance-{secrets.token_hex(6)}.txt"
        ok(env, f"with open({name!r}, 'w') as f:\n    f.write('kept ü')")
        try:
            assert ok(env, f"import os\nprint(open({name!r}).read(), os.access('.', os.W_OK))") == (
                "kept ü True\n"
            )
            assert not os.path.exists(name), "the cell wrote into the host's working directory"
        finally:
            with contextlib.suppress(OSError):
                os.remove(name)
