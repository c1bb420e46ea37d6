"""REP: the REPL names every environment provides, and custom tools of all three kinds."""

from __future__ import annotations

import threading
from typing import Any

from rlm_conformance.cases import case
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.fixtures import StartEnv
from rlm_conformance.suite.helpers import failed, ok, value
from rlm_core.environments.base import SUBCALLS, Environment, ToolSpec


class ReplNameTests:
    """``llm_query`` and friends, ``answer``, ``SHOW_VARS``, ``history``, custom tools."""

    @case("REP-001", "llm_query returns the sub-LM's reply", requires=[SUBCALLS])
    def test_llm_query(self, env: Environment, subcalls: RecordingSubcalls) -> None:
        assert ok(env, "print(llm_query('hello'))") == "llm:hello\n"
        assert subcalls.calls == [("llm", "hello", None)]

    @case("REP-002", "llm_query_batched returns replies in prompt order", requires=[SUBCALLS])
    def test_llm_query_batched(self, env: Environment) -> None:
        assert value(env, "llm_query_batched(['a', 'b', 'c'])") == ["llm:a", "llm:b", "llm:c"]

    @case("REP-003", "rlm_query reaches the host's child-RLM handler", requires=[SUBCALLS])
    def test_rlm_query(self, env: Environment) -> None:
        assert ok(env, "print(rlm_query('deep'))") == "rlm:deep\n"

    @case("REP-004", "rlm_query_batched returns answers in prompt order", requires=[SUBCALLS])
    def test_rlm_query_batched(self, env: Environment) -> None:
        assert value(env, "rlm_query_batched(['x', 'y'])") == ["rlm:x", "rlm:y"]

    @case("REP-005", "the model= argument reaches the host", requires=[SUBCALLS])
    def test_model_argument(self, env: Environment, subcalls: RecordingSubcalls) -> None:
        ok(env, "llm_query('p', model='other-model')\nllm_query_batched(['q'], model='m2')")
        assert sorted(c[2] or "" for c in subcalls.calls) == ["m2", "other-model"]

    @case("REP-006", "answer starts as {'content': '', 'ready': False}")
    def test_answer_initial(self, env: Environment) -> None:
        assert value(env, "answer") == {"content": "", "ready": False}

    @case("REP-007", "SHOW_VARS lists the variables a cell made")
    def test_show_vars(self, env: Environment) -> None:
        out = ok(env, "alpha = 1\nbeta_list = [1]\nprint(SHOW_VARS())")
        assert "alpha" in out and "beta_list" in out

    @case("REP-008", "history and history_0 hold a stored conversation")
    def test_history(self, env: Environment) -> None:
        messages = [{"role": "user", "content": "first question"}]
        assert env.add_history(messages) == 0
        assert value(env, "[history[0]['content'], history_0 == history]") == [
            "first question", True,
        ]  # fmt: skip
        assert env.get_history_count() == 1

    @case("REP-009", "a function tool runs on the host, with keyword arguments")
    def test_function_tool(self, start_env: StartEnv) -> None:
        seen: list[tuple[Any, ...]] = []

        def lookup(city: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
            seen.append((city, options, threading.current_thread().name))
            return {"city": city, "population": 700, "options": options}

        env = start_env(tools=[ToolSpec("lookup", lookup, "city facts")])
        assert value(env, "lookup('Oslo', options={'units': ['k']})") == {
            "city": "Oslo", "population": 700, "options": {"units": ["k"]},
        }  # fmt: skip
        assert [s[:2] for s in seen] == [("Oslo", {"units": ["k"]})]

    @case("REP-010", "a value tool is bound as a variable")
    def test_value_tool(self, start_env: StartEnv) -> None:
        env = start_env(tools=[ToolSpec("FACTORS", {"a": [1, 2]})])
        assert value(env, "FACTORS['a'][1] * 10") == 20

    @case("REP-011", "a source tool is defined inside the sandbox")
    def test_source_tool(self, start_env: StartEnv) -> None:
        tool = ToolSpec("triple", {"source": "def triple(x):\n    return 3 * x"}, "x3")
        env = start_env(tools=[tool])
        assert value(env, "triple(4)") == 12

    @case("REP-012", "a tool that raises on the host raises in the cell, with its message")
    def test_tool_error(self, start_env: StartEnv) -> None:
        def broken(x: int) -> int:
            raise ValueError(f"no such thing: {x}")

        env = start_env(tools=[ToolSpec("broken", broken)])
        result = env.execute("broken(5)")
        assert "no such thing: 5" in failed(result)
        out = ok(env, "try:\n    broken(6)\nexcept Exception as e:\n    print('caught', e)")
        assert "caught" in out and "no such thing: 6" in out

    @case("REP-013", "a cell that rebinds a REPL function gets it back in the next cell")
    def test_rebinding_restored(self, env: Environment) -> None:
        ok(env, "llm_query = None\nSHOW_VARS = 3\nrlm_query = print")
        assert ok(env, "print(llm_query('again'), callable(SHOW_VARS))") == "llm:again True\n"

    @case("REP-014", "a cell that rebinds context or answer does not lose them")
    def test_context_restored(self, env: Environment) -> None:
        env.add_context("the context")
        ok(env, "context = 'changed'")
        assert ok(env, "print(context)") == "the context\n"
        ok(env, "answer = 'not a dict'")
        assert value(env, "type(answer).__name__") == "dict"

    @case("REP-015", "a tool can be called from many threads of a cell at once")
    def test_tool_concurrency(self, start_env: StartEnv) -> None:
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        enough = threading.Event()

        def slow(i: int) -> int:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                if state["now"] >= 4:
                    enough.set()
            enough.wait(20)
            with lock:
                state["now"] -= 1
            return i * i

        env = start_env(tools=[ToolSpec("slow", slow)])
        code = (
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(4) as pool:\n    squares = list(pool.map(slow, range(4)))"
        )
        ok(env, code)
        assert value(env, "squares") == [0, 1, 4, 9]
        assert state["peak"] >= 4, f"tool calls did not overlap (peak {state['peak']})"
