"""LIF: start, close, context managers, and nothing left running after close."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from rlm_conformance.cases import case
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.fixtures import StartEnv
from rlm_conformance.probes import (
    Identity,
    TempDirWatch,
    describe,
    host_identity,
    kill,
    running,
    wait_gone,
)
from rlm_conformance.setup import AGENT, EnvironmentSetup
from rlm_conformance.suite.helpers import PROCESS_OF_CELL, ok
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import PERSISTENT, SEPARATE_PROCESS, Environment, Session
from rlm_core.exceptions import RLMError

GRACE = 15.0
"""Seconds a closed environment's processes may take to end."""


def cell_process(env: Environment) -> Identity:
    """The process running ``env``'s cells, as seen from this machine (skips the test
    when the sandbox's processes are not visible here: a sandbox on another machine)."""
    pid, start = json.loads(ok(env, PROCESS_OF_CELL))
    process = host_identity((pid, start))
    if not running(process):
        pytest.skip("the sandbox's processes are not visible from this machine")
    return process


class LifecycleTests:
    """Start, close, and what is left afterwards."""

    @case("LIF-001", "start, run a cell, close; closing again is safe")
    def test_close_twice(self, start_env: StartEnv) -> None:
        env = start_env()
        assert ok(env, "print('up')") == "up\n"
        env.close()
        env.close()

    @case("LIF-002", "closing an environment that never started is safe")
    def test_close_unstarted(self, environment_setup: EnvironmentSetup) -> None:
        env = environment_setup.build()
        env.close()
        env.close()

    @case("LIF-003", "the context manager closes the environment")
    def test_context_manager(self, environment_setup: EnvironmentSetup) -> None:
        with environment_setup.build() as env:
            env.start(Session(subcalls=RecordingSubcalls()))
            assert ok(env, "print(1 + 1)") == "2\n"
        with pytest.raises(RLMError):
            env.execute("print('after')")

    @case("LIF-004", "a cell after close is a clear, typed error")
    def test_execute_after_close(self, start_env: StartEnv) -> None:
        env = start_env()
        env.close()
        with pytest.raises(RLMError) as raised:
            env.execute("print('after')")
        assert "closed" in str(raised.value) or "not started" in str(raised.value)

    @case("LIF-005", "two environments at once keep separate state")
    def test_two_environments(self, start_env: StartEnv) -> None:
        first, second = start_env(), start_env()
        ok(first, "who = 'first'")
        ok(second, "who = 'second'")
        assert ok(first, "print(who)") == "first\n"
        assert ok(second, "print(who)") == "second\n"
        first.close()
        assert ok(second, "print(who)") == "second\n"

    @case(
        "LIF-006",
        "the process that ran the cells ends when the environment closes",
        requires=[SEPARATE_PROCESS],
    )
    def test_process_ends_at_close(self, start_env: StartEnv) -> None:
        env = start_env()
        process = cell_process(env)
        env.close()
        left = wait_gone([process], GRACE)
        shown = [describe(p) for p in left]
        kill(left)
        assert not left, f"still running {GRACE:g}s after close(): {shown}"

    @case(
        "LIF-007",
        "a closed environment's sandbox is no longer in the provider's listing",
        requires=[AGENT],
    )
    def test_sandbox_unlisted_after_close(self, start_env: StartEnv) -> None:
        env = start_env()
        assert isinstance(env, AgentEnvironment)
        launcher = env.active_launcher
        assert launcher is not None
        listed = type(launcher).list_sandboxes()
        if listed is None:
            pytest.skip(f"{type(launcher).__name__} cannot list its sandboxes")
        sandbox = launcher.sandbox_id
        assert sandbox is not None, "a launcher that lists sandboxes must name its own"
        assert sandbox in listed, f"the running sandbox {sandbox} is not listed: {listed}"
        env.close()
        after = type(launcher).list_sandboxes() or []
        assert sandbox not in after, f"{sandbox} is still listed after close(): {after}"

    @case(
        "LIF-008",
        "a started environment serves a new session with its state kept (persistent runs)",
        requires=[PERSISTENT],
    )
    def test_rebind_keeps_state(self, start_env: StartEnv) -> None:
        env = start_env()
        ok(env, "kept = [1, 2]")
        fresh = RecordingSubcalls(answer=lambda prompt, kind: f"new-{kind}:{prompt}")
        env.rebind(Session(subcalls=fresh))
        assert ok(env, "print(kept, llm_query('x'))") == "[1, 2] new-llm:x\n"

    @case("LIF-009", "a big context leaves no temporary file behind after close")
    def test_no_temporary_files_left(
        self, start_env: StartEnv, _conformance_case: TempDirWatch
    ) -> None:
        env = start_env()
        env.add_context("x" * (8 * 1024 * 1024))
        assert ok(env, "print(len(context))") == f"{8 * 1024 * 1024}\n"
        env.close()
        assert _conformance_case.leftovers() == []

    @case(
        "LIF-010",
        "closing while a cell runs ends the cell with a typed error and leaves nothing",
        requires=[SEPARATE_PROCESS],
    )
    def test_close_during_a_cell(self, start_env: StartEnv) -> None:
        env = start_env()
        process = cell_process(env)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = env.execute("while True:\n    pass")
            except BaseException as exc:  # the expected path: the sandbox went away
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(1.0)
        env.close()
        thread.join(60)
        assert not thread.is_alive(), "execute() did not return after close()"
        if "error" in outcome:
            assert isinstance(outcome["error"], RLMError), repr(outcome["error"])
        else:
            assert outcome["result"].error is not None
        left = wait_gone([process], GRACE)
        shown = [describe(p) for p in left]
        kill(left)
        assert not left, f"still running after close(): {shown}"
