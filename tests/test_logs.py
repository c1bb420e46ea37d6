"""Trajectory logs: one file per completion in the ``rlms`` format, sub-calls and child RLMs
recorded with usage and depth, children as nested trajectories, a bounded size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scripts import Script, finish, repl

from rlm_core import RLM, RLMLogger
from rlm_core.logger import usage_delta
from rlm_core.types import ModelUsageSummary, RLMIteration, RLMMetadata, UsageSummary

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RLMS_LOG = FIXTURES / "rlms_0_1_3" / "trajectory.jsonl"
MARKER = "TOP-LEVEL-RUN"

ROOT_CELLS = [
    "n = len(context)\n"
    "a = llm_query('Summarise: ' + context[:40])\n"
    "b = llm_query_batched(['Label: ' + context[:20], 'Label: ' + context[20:40]])\n"
    "print(n, a, b)",
    "c = rlm_query('Which station had storms? ' + context[:60])\nprint(c)",
]
FAILING_CELL = "print('</script><div data-kind=\"pwned\">x</div><!--')\nmissing_name + 1"
BATCHED_CHILDREN = (
    "d = rlm_query_batched(['first ' + context[:10], 'second ' + context[10:20]])\nprint(d)"
)
CHILD_CELLS = [
    "v = llm_query('Name the station: ' + context)\nprint(v)",
    "answer['content'] = 'child saw ' + v\nanswer['ready'] = True",
]


def root_reply(messages: list[dict[str, Any]]) -> str:
    """The stand-in LM's root replies: the top-level RLM runs ROOT_CELLS, then a turn with a
    failing cell and a batch of children, then answers; every child RLM runs CHILD_CELLS."""
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if MARKER not in str(messages[1]["content"]):
        return repl(CHILD_CELLS[min(turn, 1)])
    if turn < len(ROOT_CELLS):
        return repl(ROOT_CELLS[turn])
    if turn == len(ROOT_CELLS):
        return repl(FAILING_CELL) + "\n" + repl(BATCHED_CHILDREN)
    return finish("Ardmore")


def record_run(
    log_dir: Path,
    context: str = "Storm at Ardmore. Calm at Brae. " * 4,
    environment: str = "local",
) -> Path:
    """Run a scripted RLM (``max_depth=2``, the local environment by default) whose cells call
    ``llm_query``, ``llm_query_batched``, ``rlm_query`` and ``rlm_query_batched``; the
    root LM reports no cost, the sub-LM of the root's cells a known one. Returns the log."""
    logger = RLMLogger(log_dir=str(log_dir))
    script = Script(root_reply, sub=lambda p: f"reply to {p[:24]}")
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        other_backends=["scripted"],
        other_backend_kwargs=[
            {"responses": script, "model_name": "priced-sub", "cost_per_token": 1e-6}
        ],
        environment=environment,
        max_depth=2,
        logger=logger,
    ) as rlm:
        result = rlm.completion(context, root_prompt=f"{MARKER}: which station had storms?")
    assert result.response == "Ardmore"
    assert logger.log_file_path is not None
    return Path(logger.log_file_path)


def read_log(path: Path | str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def calls_of(iteration: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for b in iteration["code_blocks"] for c in b["result"]["rlm_calls"]]


def is_child(call: dict[str, Any]) -> bool:
    return isinstance(call.get("metadata"), dict) and "iterations" in call["metadata"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return read_log(record_run(tmp_path_factory.mktemp("logs")))


# -- one file per completion -----------------------------------------------------------------


def test_each_completion_writes_its_own_file(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    replies = [repl("print(1)"), finish("one"), finish("two")]
    with RLM(
        backend="scripted", backend_kwargs={"responses": replies}, persistent=True, logger=logger
    ) as rlm:
        first = rlm.completion("a")
        first_path = logger.log_file_path
        second = rlm.completion("b")
    assert first_path is not None and logger.log_file_path is not None
    assert logger.log_file_paths == [first_path, logger.log_file_path]
    assert first_path != logger.log_file_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(p).name for p in logger.log_file_paths
    )
    one, two = read_log(first_path), read_log(logger.log_file_path)
    assert [e["type"] for e in one] == ["metadata", "iteration", "iteration"]
    assert [e["type"] for e in two] == ["metadata", "iteration"]
    assert [e["iteration"] for e in two[1:]] == [1]
    assert one[-1]["final_answer"] == "one" and two[-1]["final_answer"] == "two"
    assert first.metadata is not None and len(first.metadata["iterations"]) == 2
    assert second.metadata is not None and len(second.metadata["iterations"]) == 1


def test_a_logger_driven_the_rlms_way_starts_a_file_per_trajectory(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path), file_name="mine")
    logger.log_metadata(RLMMetadata("m", 1, 5, "scripted", {}, "local", {}))
    logger.log(RLMIteration(prompt=[], response="r1", code_blocks=[]))
    logger.clear_iterations()
    logger.log(RLMIteration(prompt=[], response="r2", code_blocks=[]))
    assert len(logger.log_file_paths) == 2
    assert all(Path(p).name.startswith("mine_") for p in logger.log_file_paths)
    for path, response in zip(logger.log_file_paths, ["r1", "r2"], strict=True):
        lines = read_log(path)
        assert [e["type"] for e in lines] == ["metadata", "iteration"]
        assert lines[1]["iteration"] == 1 and lines[1]["response"] == response


def test_nothing_is_written_before_a_completion_starts(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    RLM(backend="scripted", backend_kwargs={"responses": [finish("x")]}, logger=logger).close()
    assert list(tmp_path.iterdir()) == [] and logger.log_file_paths == []


# -- the rlms format ---------------------------------------------------------------------------

EXTRA_KEYS = {
    "metadata": {"depth"},
    "iteration": {"root_usage"},
    "result": {"error"},
    "call": {"depth"},
}
"""The keys rlm-core adds to what rlms 0.1.3 writes (readers of rlms logs ignore them)."""


def shapes(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The keys of each kind of record in a log, over every record of that kind."""
    out: dict[str, set[str]] = {}

    def note(kind: str, record: dict[str, Any]) -> None:
        out.setdefault(kind, set()).update(record)

    def walk(iterations: list[dict[str, Any]]) -> None:
        for iteration in iterations:
            note("iteration", iteration)
            for block in iteration["code_blocks"]:
                note("block", block)
                note("result", block["result"])
                for call in block["result"]["rlm_calls"]:
                    note("child call" if is_child(call) else "call", call)
                    note("usage", call["usage_summary"])
                    for model in call["usage_summary"]["model_usage_summaries"].values():
                        note("model usage", model)
                    if is_child(call):
                        note("child trajectory", call["metadata"])
                        note("metadata", call["metadata"]["run_metadata"])
                        walk(call["metadata"]["iterations"])

    note("metadata", lines[0])
    walk(lines[1:])
    out["metadata"] -= {"type", "timestamp"}
    return out


def test_the_log_has_every_field_rlms_0_1_3_writes_and_only_known_extras(
    recorded: list[dict[str, Any]],
) -> None:
    theirs, ours = shapes(read_log(RLMS_LOG)), shapes(recorded)
    assert set(ours) == set(theirs)
    for kind, keys in theirs.items():
        assert keys <= ours[kind], f"{kind}: missing {keys - ours[kind]}"
        if kind not in ("usage", "model usage"):  # usage summaries may carry more detail
            expected = EXTRA_KEYS.get("call" if kind == "child call" else kind, set())
            assert ours[kind] - keys == expected, kind


def test_every_line_is_a_metadata_or_iteration_record(recorded: list[dict[str, Any]]) -> None:
    assert recorded[0]["type"] == "metadata"
    assert all(e["type"] == "iteration" for e in recorded[1:])
    assert [e["iteration"] for e in recorded[1:]] == list(range(1, len(recorded)))
    assert all(isinstance(e["code_blocks"], list) for e in recorded[1:])


# -- sub-calls, children, usage and depth ----------------------------------------------------


@pytest.mark.parametrize("environment", ["local", "subprocess"])
def test_subcalls_and_children_are_recorded_with_usage_and_depth(
    environment: str, recorded: list[dict[str, Any]], tmp_path: Path
) -> None:
    if environment != "local":
        recorded = read_log(record_run(tmp_path, environment=environment))
    assert recorded[0]["depth"] == 0
    root_calls = [c for it in recorded[1:] for c in calls_of(it)]
    plain = [c for c in root_calls if not is_child(c)]
    children = [c for c in root_calls if is_child(c)]
    assert len(plain) == 3 and len(children) == 3
    assert {c["depth"] for c in root_calls} == {1}
    assert {c["root_model"] for c in plain} == {"priced-sub"}
    for child in children:
        trajectory = child["metadata"]
        assert trajectory["run_metadata"]["depth"] == 1
        assert [i["iteration"] for i in trajectory["iterations"]] == [1, 2]
        assert trajectory["iterations"][-1]["final_answer"] == child["response"]
        (grandchild_call,) = calls_of(trajectory["iterations"][0])
        assert grandchild_call["depth"] == 2 and not is_child(grandchild_call)
        assert grandchild_call["prompt"].startswith("Name the station: ")
    for call in plain:
        (usage,) = call["usage_summary"]["model_usage_summaries"].values()
        assert usage["total_calls"] == 1 and usage["total_cost"] > 0


def _tokens(summary: dict[str, Any]) -> tuple[int, int, int]:
    models = summary["model_usage_summaries"].values()
    return (
        sum(m["total_calls"] for m in models),
        sum(m["total_input_tokens"] for m in models),
        sum(m["total_output_tokens"] for m in models),
    )


def _add(*parts: tuple[int, int, int]) -> tuple[int, int, int]:
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def test_root_usage_and_call_usage_add_up_to_each_trajectory_total(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    script = Script(root_reply, sub=lambda p: "ok")
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        max_depth=2,
        logger=logger,
    ) as rlm:
        result = rlm.completion("Storm at Ardmore. " * 5, root_prompt=MARKER)
    assert result.metadata is not None

    def total(iterations: list[dict[str, Any]]) -> tuple[int, int, int]:
        own = [_tokens(i["root_usage"]) for i in iterations]
        calls = [_tokens(c["usage_summary"]) for i in iterations for c in calls_of(i)]
        return _add(*own, *calls)

    assert total(result.metadata["iterations"]) == _tokens(result.usage_summary.to_dict())
    for iteration in result.metadata["iterations"]:
        for call in calls_of(iteration):
            if is_child(call):
                assert total(call["metadata"]["iterations"]) == _tokens(call["usage_summary"])


def test_usage_delta_subtracts_per_model_and_keeps_unknown_costs_unknown() -> None:
    before = UsageSummary(
        {"a": ModelUsageSummary(1, 10, 2, 0.5), "b": ModelUsageSummary(1, 5, 5, None)}
    )
    after = UsageSummary(
        {
            "a": ModelUsageSummary(3, 30, 6, 1.5),
            "b": ModelUsageSummary(2, 9, 9, None),
            "c": ModelUsageSummary(1, 1, 1, None),
        }
    )
    delta = usage_delta(before, after)
    models = delta["model_usage_summaries"]
    assert models["a"]["total_calls"] == 2 and models["a"]["total_cost"] == 1.0
    assert (models["b"]["total_calls"], models["b"]["total_input_tokens"]) == (1, 4)
    assert "total_cost" not in models["b"] and "total_cost" not in models["c"]
    assert delta["total_cost"] == 1.0
    assert usage_delta(after, after) == {"model_usage_summaries": {}}


def test_a_failed_child_keeps_the_turns_it_made(tmp_path: Path) -> None:
    def reply(messages: list[dict[str, Any]]) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if MARKER not in str(messages[1]["content"]):
            return repl("print('child turn')\n1 / 0")
        return [repl("r = rlm_query('sub task')\nprint(r)"), finish("done")][min(turn, 1)]

    logger = RLMLogger()
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(reply)},
        max_depth=2,
        max_errors=1,
        logger=logger,
    ) as rlm:
        result = rlm.completion("ctx", root_prompt=MARKER)
    assert result.metadata is not None
    (call,) = calls_of(result.metadata["iterations"][0])
    assert "ErrorThresholdExceededError" in call["error"]
    assert call["metadata"]["run_metadata"]["depth"] == 1
    (child_turn,) = call["metadata"]["iterations"]
    assert child_turn["code_blocks"][0]["result"]["stdout"] == "child turn\n"


# -- in memory and on disk -------------------------------------------------------------------


def test_the_in_memory_trajectory_is_the_file(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    script = Script(root_reply, sub=lambda p: "ok")
    with RLM(
        backend="scripted", backend_kwargs={"responses": script}, max_depth=2, logger=logger
    ) as rlm:
        result = rlm.completion("Storm at Ardmore. " * 5, root_prompt=MARKER)
    assert logger.log_file_path is not None
    lines = read_log(logger.log_file_path)
    header = {k: v for k, v in lines[0].items() if k not in ("type", "timestamp")}
    assert result.metadata == json.loads(
        json.dumps({"run_metadata": header, "iterations": lines[1:]})
    )


# -- size ------------------------------------------------------------------------------------

MIB = 1024 * 1024


@pytest.mark.parametrize("environment", ["local", "subprocess"])
def test_a_10_mib_context_is_never_copied_into_the_log(environment: str, tmp_path: Path) -> None:
    untouched = "NEVER-SHOWN-TO-ANY-LM"
    block = "0123456789abcdef" * 64
    context = block * (5 * 1024) + untouched + block * (5 * 1024)
    assert len(context) >= 10 * MIB

    def reply(messages: list[dict[str, Any]]) -> str:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if MARKER not in str(messages[1]["content"]):
            return [repl("print(context[:100])"), finish("child ok")][min(turn, 1)]
        cells = [
            "print(len(context), context[:200])",
            "s = llm_query('Summarise: ' + context[:1000])\nprint(s)",
            "c = rlm_query(context[1000:3000])\nprint(c)",
            "parts = [context[i:i + 4096] for i in range(0, 8 * 4096, 4096)]\n"
            "print(len(llm_query_batched(parts)))",
        ]
        return repl(cells[turn]) if turn < len(cells) else finish("done")

    logger = RLMLogger(log_dir=str(tmp_path))
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": Script(reply, sub=lambda p: "ok")},
        environment=environment,
        max_depth=2,
        logger=logger,
    ) as rlm:
        result = rlm.completion(context, root_prompt=MARKER)
    assert result.response == "done"
    assert logger.log_file_path is not None
    text = Path(logger.log_file_path).read_text(encoding="utf-8")
    size = len(text.encode("utf-8"))
    assert size < MIB, f"a run over a 10 MiB context wrote a {size}-byte log"
    assert untouched not in text
    cells = [it["code_blocks"][0]["result"]["locals"] for it in read_log(logger.log_file_path)[1:]]
    capped = {"capped": True, "type": "str", "length": len(context), "prefix": context[:2000]}
    assert cells[0]["context"] == cells[0]["context_0"] == capped
    assert cells[1]["s"] == "ok" and cells[2]["c"] == "child ok"
    assert cells[3]["parts"]["type"] == "list" and cells[3]["parts"]["length"] == 8
    assert cells[3]["parts"]["prefix"].startswith('["0123456789abcdef')
    assert cells[4]["answer"] == {"content": "done", "ready": True}
