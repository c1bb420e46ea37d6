"""Progress output: nothing when quiet, plain lines off a terminal, a live status block on
one (checked under a real pseudo-terminal), exact counts under concurrency, and no ``rich``
import unless a status block is drawn."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from lm_server import LMServer, openai_server  # noqa: F401  (fixture)
from scripts import Script, finish, repl

from rlm_core import RLM
from rlm_core.backends.base import LMUsage
from rlm_core.cli import main
from rlm_core.progress import ProgressSnapshot, ProgressState, format_cost, status_lines
from rlm_core.usage import UsageLedger

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Z0-9]|[=>78])")
SCRUBBED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "NO_COLOR")
TERMINAL_OVERRIDES = ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def make_rlm(script: Script, **kwargs: object) -> RLM:
    return RLM(backend="scripted", backend_kwargs={"responses": script}, **kwargs)  # type: ignore[arg-type]


def is_top(messages: list[dict[str, str]]) -> bool:
    """The top-level RLM is the one asked the question ``TOPQ``; children get none."""
    return any("TOPQ" in str(m["content"]) for m in messages)


# -- the status block -------------------------------------------------------------------


def test_status_lines_show_iteration_calls_children_tokens_cost_and_time() -> None:
    snap = ProgressSnapshot(
        iteration=3,
        max_iterations=30,
        subcalls_running=8,
        subcalls_done=120,
        subcalls_failed=2,
        children_running={1: 2, 2: 1},
        children_done=5,
        input_tokens=12345,
        output_tokens=678,
        cost=0.0123,
        elapsed=75.0,
    )
    run, calls = status_lines(snap)
    assert run == "iteration 3/30 | 1m15s | tokens 12,345 in / 678 out | cost $0.0123"
    assert calls == (
        "sub-calls 8 running, 120 done, 2 failed | "
        "children 3 running (depth 1: 2, depth 2: 1), 5 done"
    )
    assert status_lines(ProgressSnapshot())[0].startswith("starting | 0.0s")


def test_an_unknown_cost_is_never_shown_as_zero() -> None:
    assert format_cost(None) == "unknown"
    assert format_cost(0.0) == "$0.0000"
    assert format_cost(0.5, partial=True) == "$0.5000+?"
    assert format_cost(12.345) == "$12.35"

    ledger = UsageLedger()
    state = ProgressState()
    state.track(ledger)
    ledger.record("model-without-a-reported-cost", LMUsage(100, 20, None))
    snap = state.snapshot()
    assert (snap.input_tokens, snap.output_tokens, snap.cost) == (100, 20, None)
    assert "cost unknown" in status_lines(snap)[0]
    assert "$0.00" not in " ".join(status_lines(snap))

    ledger.record("model-with-a-reported-cost", LMUsage(10, 5, 0.002))
    snap = state.snapshot()
    assert (snap.cost, snap.cost_partial) == (0.002, True)
    assert "cost $0.0020+?" in status_lines(snap)[0]


# -- quiet and plain --------------------------------------------------------------------


def tree_script() -> Script:
    """The top RLM batches four sub-calls and starts one child; the child makes one call."""

    def root(messages: list[dict[str, str]]) -> str:
        turn = sum(m["role"] == "assistant" for m in messages)
        if is_top(messages):
            if turn == 0:
                return repl(
                    "r = llm_query_batched([f'part {i}' for i in range(4)])\n"
                    "c = rlm_query('child question')\n"
                    "print(len(r), c)"
                )
            return finish("the final answer")
        return repl("answer['content'] = 'child: ' + llm_query('inner')\nanswer['ready'] = True")

    return Script(root)


def test_quiet_run_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    rlm = make_rlm(tree_script(), max_depth=2)
    assert rlm.completion("ctx", root_prompt="TOPQ").response == "the final answer"
    assert capfd.readouterr() == ("", "")
    assert rlm.verbose.state is None


def test_off_a_terminal_verbose_prints_plain_lines(capfd: pytest.CaptureFixture[str]) -> None:
    rlm = make_rlm(tree_script(), max_depth=2, verbose=True)
    rlm.completion("ctx", root_prompt="TOPQ")
    out, err = capfd.readouterr()
    assert err == ""
    assert "\x1b" not in out and "\r" not in out
    lines = out.splitlines()
    assert lines[0].startswith("== RLM: backend=scripted")
    iterations = [line for line in lines if line.startswith("-- iteration")]
    assert len(iterations) == 2  # the top-level RLM's turns, not the child's
    assert all(re.fullmatch(r"-- iteration [12] \(\d+\.\d\ds\)", line) for line in iterations)
    assert "   [cell" in out and "4 child: sub-answer to: inner" in out
    assert re.search(r"^== answer after \d+\.\d\ds, 8 LM call\(s\), ", out, re.MULTILINE)
    assert lines[-1] == "the final answer"
    assert "sub-calls" not in out  # the status block is for terminals only


# -- counts -----------------------------------------------------------------------------


def test_counts_are_exact_under_concurrency(capfd: pytest.CaptureFixture[str]) -> None:
    calls, workers = 64, 8
    seen: list[int] = []
    lock = threading.Lock()
    all_in = threading.Barrier(workers)
    arrivals = [0]
    holder: list[RLM] = []

    def sub(prompt: str) -> str:
        state = holder[0].verbose.state
        assert state is not None
        with lock:
            arrivals[0] += 1
            first_wave = arrivals[0] <= workers
        if first_wave:  # every worker is inside a call at once
            all_in.wait(timeout=60)
        with lock:
            seen.append(state.snapshot().subcalls_running)
        if prompt.endswith("7"):
            raise RuntimeError("this sub-LM call fails")
        return "ok"

    code = f"r = llm_query_batched([f'p {{i}}' for i in range({calls})])\nprint(len(r))"
    rlm = make_rlm(
        Script([repl(code), finish("done")], sub),
        max_concurrent_subcalls=workers,
        verbose=True,
    )
    holder.append(rlm)
    assert rlm.completion("ctx").response == "done"
    state = rlm.verbose.state
    assert state is not None
    snap = state.snapshot()
    assert snap.subcalls_done == calls
    assert snap.subcalls_running == 0
    assert snap.subcalls_failed == sum(str(i).endswith("7") for i in range(calls))
    assert len(seen) == calls
    assert max(seen) == workers and min(seen) >= 1
    assert snap.iteration == 2 and snap.max_iterations == 30
    capfd.readouterr()


def test_children_are_counted_at_their_depth(capfd: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[int, int]] = []
    holder: list[RLM] = []

    def root(messages: list[dict[str, str]]) -> str:
        if is_top(messages):
            turn = sum(m["role"] == "assistant" for m in messages)
            if turn == 0:
                return repl(
                    "print(rlm_query('level1'))\nprint(rlm_query_batched(['fails', 'level2']))"
                )
            return finish("done")
        return repl(
            "if context == 'fails':\n"
            "    raise SystemExit('this child never answers')\n"
            "out = rlm_query('level2') if context == 'level1' else llm_query('deep')\n"
            "answer['content'] = out\n"
            "answer['ready'] = True"
        )

    def sub(prompt: str) -> str:
        state = holder[0].verbose.state
        assert state is not None
        seen.append(state.snapshot().children_running)
        return "deep answer"

    rlm = make_rlm(Script(root, sub), max_depth=3, max_errors=1, verbose=True)
    holder.append(rlm)
    assert rlm.completion("ctx", root_prompt="TOPQ").response == "done"
    state = rlm.verbose.state
    assert state is not None
    snap = state.snapshot()
    # level1 -> level2 -> llm_query, then a batch of a failing child and a level2 child
    assert seen[0] == {1: 1, 2: 1}
    assert snap.children_done == 4 and snap.children_failed == 1
    assert snap.children_running == {}
    assert snap.subcalls_done == 2 and snap.subcalls_running == 0
    assert snap.iteration == 2  # the top-level RLM's, not a child's
    capfd.readouterr()


# -- on a real terminal -----------------------------------------------------------------


def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED + TERMINAL_OVERRIDES}
    env["TERM"] = "xterm-256color"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def run_on_terminal(
    argv: Sequence[str],
    steps: Sequence[tuple[str, bytes]] = (),
    stdout_pipe: bool = False,
    timeout: float = 90,
) -> tuple[str, str, int]:
    """Run ``argv`` with a pseudo-terminal (120x40, no echo) as stdin, stderr and (unless
    ``stdout_pipe``) stdout. Each step writes its bytes to the terminal once the screen
    output so far, without escape codes, matches its pattern. Returns the terminal output
    without escape codes, the piped stdout and the exit status."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(
        list(argv),
        stdin=slave,
        stdout=subprocess.PIPE if stdout_pipe else slave,
        stderr=slave,
        cwd=REPO,
        env=terminal_env(),
        start_new_session=True,
    )
    os.close(slave)
    raw = bytearray()
    pending = list(steps)
    give_up = time.monotonic() + timeout  # a safety net against a hang, not a measurement
    try:
        while time.monotonic() < give_up:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            raw.extend(chunk)
            if pending and re.search(pending[0][0], screen_text(bytes(raw))):
                os.write(master, pending.pop(0)[1])
        else:
            pytest.fail(f"no exit within {timeout}s; terminal so far:\n{screen_text(bytes(raw))}")
        out = proc.stdout.read().decode() if proc.stdout else ""
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        os.close(master)
    assert not pending, f"never saw {pending[0][0]!r} in:\n{screen_text(bytes(raw))}"
    return screen_text(bytes(raw)), out, status


def screen_text(raw: bytes) -> str:
    """Terminal output as text: escape codes dropped, carriage returns as line breaks."""
    text = ANSI.sub("", raw.decode("utf-8", errors="replace"))
    return text.replace("\r\n", "\n").replace("\r", "\n")


LIBRARY_RUN = textwrap.dedent(
    """
    import sys, threading
    from scripts import Script, finish, repl
    from rlm_core import RLM

    VERBOSE = {verbose}

    class Gate:
        # Calls that reach a gate wait until the test writes a line to the terminal.
        def __init__(self):
            self.lock, self.open = threading.Lock(), not VERBOSE

        def wait(self):
            with self.lock:
                if not self.open:
                    sys.stdin.readline()
                    self.open = True

    batch, inner = Gate(), Gate()

    def root(messages):
        turn = sum(m["role"] == "assistant" for m in messages)
        if any("TOPQ" in str(m["content"]) for m in messages):
            if turn == 0:
                return repl(
                    "r = llm_query_batched([f'batch {{i}}' for i in range(16)])\\n"
                    "c = rlm_query('child question')\\n"
                    "print('cell says', len(r), c)"
                )
            return finish("the final answer")
        return repl("answer['content'] = llm_query('inner')\\nanswer['ready'] = True")

    def sub(prompt):
        (batch if prompt.startswith("batch") else inner).wait()
        return "ok " + prompt

    rlm = RLM(backend="scripted", backend_kwargs={{"responses": Script(root, sub)}},
              max_depth=2, max_iterations=3, max_concurrent_subcalls=8, verbose=VERBOSE)
    result = rlm.completion("ctx", root_prompt="TOPQ")
    print("RESULT:", result.response)
    print("RICH LOADED:", "rich" in sys.modules)
    """
)


def test_on_a_terminal_the_status_block_is_redrawn_while_a_cell_runs() -> None:
    # The batched calls cannot finish until the test has seen all eight of them running on
    # the screen, and the child's call not until the child is shown running: both screens
    # can only come from redraws made while the cell runs.
    screen, _, status = run_on_terminal(
        [sys.executable, "-c", LIBRARY_RUN.format(verbose=True)],
        steps=[
            (r"iteration 1/3 \|.*\nsub-calls 8 running, 0 done", b"go\n"),
            (r"sub-calls 1 running, 16 done \| children 1 running \(depth 1: 1\)", b"go\n"),
        ],
    )
    assert status == 0, screen
    assert "-- iteration 1" in screen and "cell says 16 ok inner" in screen
    assert "-- iteration 2" in screen
    final = re.findall(
        r"^iteration 2/3 \| [\d.ms]+ \| tokens ([\d,]+) in / ([\d,]+) out \| cost (\S+)\n"
        r"sub-calls 0 running, 17 done \| children 0 running, 1 done$",
        screen,
        re.MULTILINE,
    )
    assert final, screen
    tokens_in, tokens_out, cost = final[-1]
    assert int(tokens_in.replace(",", "")) > 0 and int(tokens_out.replace(",", "")) > 0
    assert cost == "unknown" or cost.startswith("$")
    after = screen.rsplit("sub-calls 0 running, 17 done", 1)[1]
    assert re.search(r"== answer after [\d.]+s, 20 LM call\(s\)", after)
    assert "the final answer\nRESULT: the final answer\nRICH LOADED: True" in after


def test_on_a_terminal_verbose_false_prints_nothing() -> None:
    screen, _, status = run_on_terminal([sys.executable, "-c", LIBRARY_RUN.format(verbose=False)])
    assert status == 0, screen
    assert screen.strip() == "RESULT: the final answer\nRICH LOADED: False"


CLI_ROOT_REPLY = """Splitting the work.

```repl
parts = llm_query_batched(["first half", "second half"])
answer["content"] = " + ".join(parts)
answer["ready"] = True
```"""


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_draws_the_status_block_on_a_terminal_stderr(
    openai_server: LMServer,  # noqa: F811
    tmp_path: Path,
    quiet: bool,
) -> None:
    system = lambda body: body["messages"][0]["role"] == "system"  # noqa: E731
    openai_server.reply = lambda body: CLI_ROOT_REPLY if system(body) else "half done"
    doc = tmp_path / "doc.txt"
    doc.write_text("some context", encoding="utf-8")
    argv = [sys.executable, "-m", "rlm_core.cli", "run", "q", "--context", str(doc)]
    argv += ["--base-url", openai_server.base_url, "--model", "m"]
    screen, out, status = run_on_terminal(argv + ["--quiet"] * quiet, stdout_pipe=True)
    assert status == 0, screen
    assert out == "half done + half done\n"
    if quiet:
        assert screen.strip() == ""
    else:
        assert re.search(
            r"^iteration 1/30 \| [\d.ms]+ \| tokens [1-9][\d,]* in / [1-9][\d,]* out \| cost \S+\n"
            r"sub-calls 0 running, 2 done \| children 0 running, 0 done$",
            screen,
            re.MULTILINE,
        ), screen


def test_cli_verbose_and_quiet_exclude_each_other() -> None:
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        main(["run", "q", "--verbose", "--quiet"], stderr=stderr)
    assert exc.value.code == 2


# -- imports ----------------------------------------------------------------------------


def test_rich_is_imported_only_to_draw_on_a_terminal() -> None:
    code = textwrap.dedent(
        """
        import sys
        import rlm_core, rlm_core.agent, rlm_core.agent.server, rlm_core.cli
        from scripts import Script, finish, repl
        from rlm_core import RLM

        loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] == "rich")
        assert not loaded(), loaded()
        script = Script([repl("print(llm_query_batched(['a', 'b']))"), finish("ok")])
        for verbose in (False, True):  # stdout is a pipe: plain lines when verbose
            rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, verbose=verbose)
            rlm.completion("ctx")
        print("RICH MODULES:", loaded())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=terminal_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "RICH MODULES: []"
