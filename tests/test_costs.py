"""Costs from a per-model price table, cached prompt tokens, usage per model and per depth,
unknown costs, and ``max_budget`` on every backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from lm_server import LMServer, prompt_chars
from scripts import finish, repl

from rlm_core import (
    RLM,
    BudgetExceededError,
    ConfigurationError,
    LMUsage,
    ModelPrice,
    ModelUsageSummary,
    PluginError,
    UsageSummary,
    hookimpl,
    lookup_price,
    register_prices,
    unregister_prices,
)
from rlm_core.backends.anthropic import AnthropicBackend
from rlm_core.backends.openai import OpenAIBackend
from rlm_core.backends.scripted import estimate_tokens
from rlm_core.plugins import get_registry
from rlm_core.pricing import model_keys, shipped_prices, table_info

Messages = list[dict[str, Any]]

ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENROUTER_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "AZURE_OPENAI_DEPLOYMENT",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never pick up real credentials or endpoints from the developer's environment."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def prices() -> Iterator[Any]:
    """``register_prices`` for this test only."""
    models: list[str] = []

    def register(table: dict[str, Any]) -> None:
        models.extend(table)
        register_prices(table)

    yield register
    unregister_prices(*models)


def openai_kwargs(server: LMServer, model: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.base_url, "api_key": "k", "model_name": model, **extra}


def price(model: str) -> ModelPrice:
    found = lookup_price(model)
    assert found is not None, model
    return found


# -- the price table --------------------------------------------------------------------------


def test_the_shipped_table_is_dated_and_prices_the_three_providers() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table_info()["compiled"])
    table = shipped_prices()
    for model in ("gpt-4o-mini", "gpt-5", "o3", "claude-sonnet-4-5", "gemini-2.5-flash"):
        assert model in table
    for model, entry in table.items():
        assert entry.input > 0 and entry.output > 0, model
        assert model == model.lower() and "/" not in model
        for rate in (entry.cached_input, entry.cache_write):
            assert rate is None or rate <= entry.input * 1.25, model


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku@20241022", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ],
)
def test_model_names_resolve_exactly_then_by_the_documented_normalisation(
    name: str, key: str
) -> None:
    assert lookup_price(name) == shipped_prices()[key]


def test_a_snapshot_priced_on_its_own_keeps_its_price() -> None:
    assert price("gpt-4o-2024-05-13") == ModelPrice(input=5.0, output=15.0)
    assert price("gpt-4o-2024-08-06") == price("gpt-4o") != price("gpt-4o-2024-05-13")
    assert model_keys("openai/gpt-4o-2024-05-13") == [
        "openai/gpt-4o-2024-05-13",
        "gpt-4o-2024-05-13",
        "openai/gpt-4o",
        "gpt-4o",
    ]


@pytest.mark.parametrize(
    "name", ["gpt-4o-mini-fast", "my-gpt-4o", "gpt", "claude", "gemini", "llama-3-70b", ""]
)
def test_a_name_that_is_not_in_the_table_has_no_price(name: str) -> None:
    assert lookup_price(name) is None


def test_cost_uses_the_cached_write_and_long_context_rates() -> None:
    sonnet = price("claude-sonnet-4-5")
    # 1M fresh + 1M read + 1M written + 1M output, below the long-context threshold rates.
    tokens = LMUsage(input_tokens=3_000_000, output_tokens=1_000_000)
    cached = LMUsage(3_000_000, 1_000_000, None, 1_000_000, 1_000_000)
    assert sonnet.long_context is not None and sonnet.long_context[0] == 200_000
    assert sonnet.cost(cached) == pytest.approx(6.0 + 0.6 + 7.5 + 22.5)
    assert sonnet.cost(tokens) == pytest.approx(3 * 6.0 + 22.5)
    short = LMUsage(100_000, 1_000, None, 40_000, 10_000)
    assert sonnet.cost(short) == pytest.approx(
        (50_000 * 3 + 40_000 * 0.3 + 10_000 * 3.75 + 1_000 * 15) / 1e6
    )
    # No cached rate: cached tokens cost the input rate.
    assert ModelPrice(input=2, output=4).cost(LMUsage(10, 10, None, 5)) == pytest.approx(60e-6)


def test_register_prices_overrides_the_table_and_is_validated(prices: Any) -> None:
    assert lookup_price("house-model") is None
    prices({"House-Model": {"input": 1, "output": 2}, "gpt-4o-mini": ModelPrice(0.0, 0.0)})
    assert lookup_price("openai/house-model-2026-01-01") == ModelPrice(1.0, 2.0)
    assert lookup_price("gpt-4o-mini") == ModelPrice(0.0, 0.0)
    unregister_prices("gpt-4o-mini")
    assert lookup_price("gpt-4o-mini") == shipped_prices()["gpt-4o-mini"]
    for bad, message in [
        ({"input": 1}, "needs both"),
        ({"input": -1, "output": 1}, "must be a number >= 0"),
        ({"input": True, "output": 1}, "must be a number >= 0"),
        ({"input": 1, "output": float("inf")}, "must be a number >= 0"),
        ({"input": 1, "output": 1, "cached": 0.1}, "unknown key"),
        ({"input": 1, "output": 1, "long_context": {"input": 2, "output": 2}}, "'above'"),
        (3.5, "must be a ModelPrice or a mapping"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            register_prices({"bad-model": bad})
    assert lookup_price("bad-model") is None


def test_plugins_register_prices_through_the_hook(register_plugin: Any, prices: Any) -> None:
    class Prices:
        @hookimpl
        def rlm_register_prices(self, register: Any) -> None:
            register("plugin-model", {"input": 7, "output": 8})
            register("gpt-4o-mini", ModelPrice(1.0, 1.0))

    register_plugin(Prices(), "price-plugin")
    assert lookup_price("vendor/plugin-model") == ModelPrice(7.0, 8.0)
    assert lookup_price("gpt-4o-mini") == ModelPrice(1.0, 1.0)  # over the shipped table
    prices({"gpt-4o-mini": {"input": 2, "output": 2}})
    assert lookup_price("gpt-4o-mini") == ModelPrice(2.0, 2.0)  # register_prices wins

    class Same:
        @hookimpl
        def rlm_register_prices(self, register: Any) -> None:
            register("plugin-model", {"input": 7, "output": 8})

    class Conflicting:
        @hookimpl
        def rlm_register_prices(self, register: Any) -> None:
            register("plugin-model", {"input": 9, "output": 9})

    register_plugin(Same(), "same-price-plugin")
    try:
        with pytest.raises(PluginError, match="registered differently by both 'price-plugin'"):
            get_registry().register(Conflicting(), name="conflicting-price-plugin")
    finally:
        get_registry().unregister("conflicting-price-plugin")
    assert lookup_price("plugin-model") == ModelPrice(7.0, 8.0)


def test_unregistering_a_plugin_forgets_its_prices() -> None:
    class Prices:
        @hookimpl
        def rlm_register_prices(self, register: Any) -> None:
            register("short-lived-model", {"input": 1, "output": 1})

    get_registry().register(Prices(), name="short-lived")
    assert lookup_price("short-lived-model") is not None
    get_registry().unregister("short-lived")
    assert lookup_price("short-lived-model") is None


def test_importing_rlm_core_does_not_load_the_table() -> None:
    code = (
        "import sys, rlm_core\n"
        "assert 'rlm_core.pricing' not in sys.modules\n"
        "from rlm_core.pricing import shipped_prices\n"
        "assert shipped_prices.cache_info().currsize == 0\n"
        "assert rlm_core.lookup_price('gpt-4o') is not None\n"
        "assert shipped_prices.cache_info().currsize == 1\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- cached prompt tokens, over real HTTP -----------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "You are terse, and you answer in one word."},
    {"role": "user", "content": "What is the capital of France? Think it over first."},
]


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_openai_cached_prompt_tokens_are_read(openai_server: LMServer, transport: str) -> None:
    openai_server.cached_tokens = 7
    backend = OpenAIBackend(**openai_kwargs(openai_server, "gpt-4o-mini"), transport=transport)
    try:
        usage = backend.complete(MESSAGES).usage
    finally:
        backend.close()
    body = openai_server.requests[-1].body
    assert usage.input_tokens == prompt_chars(body) // 4  # prompt_tokens include cached ones
    assert usage.cached_input_tokens == 7
    assert usage.cache_write_tokens == 0


def test_anthropic_cache_reads_and_writes_are_counted(anthropic_server: LMServer) -> None:
    anthropic_server.cached_tokens = 6
    anthropic_server.cache_write_tokens = 4
    backend = AnthropicBackend(base_url=anthropic_server.url, api_key="k", model_name="claude")
    try:
        usage = backend.complete(MESSAGES).usage
    finally:
        backend.close()
    prompt_tokens = prompt_chars(anthropic_server.requests[-1].body) // 4
    assert prompt_tokens > 10
    assert usage == LMUsage(prompt_tokens, usage.output_tokens, None, 6, 4)


def test_cached_tokens_are_priced_at_the_cached_rate(openai_server: LMServer) -> None:
    openai_server.cached_tokens = 100
    answer = finish("done")
    openai_server.reply = lambda body: answer
    rlm = RLM(backend="openai", backend_kwargs=openai_kwargs(openai_server, "gpt-4o-mini"))
    usage = rlm.completion("c").usage_summary
    prompt_tokens = prompt_chars(openai_server.requests[0].body) // 4
    assert usage.total_cached_input_tokens == 100
    mini = price("gpt-4o-mini")
    expected = ((prompt_tokens - 100) * 0.15 + 100 * 0.075 + len(answer) // 4 * 0.6) / 1e6
    assert mini.cached_input == 0.075 and usage.total_cost == pytest.approx(expected)


# -- usage per model, per depth and in total --------------------------------------------------


def tree_script() -> Any:
    """The root asks one sub-LM (a second model) and two child RLMs; each child asks one."""

    def reply(messages: Messages) -> str:
        if messages[0]["role"] != "system":
            return "sub-answer"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if not messages[1]["content"].startswith("Answer the following"):  # a child RLM
            return repl(
                "x = llm_query('from child')\nanswer['content'] = x\nanswer['ready'] = True"
            )
        if turn == 0:
            return repl(
                "a = llm_query('hello', model='gpt-4.1-nano')\n"
                "kids = rlm_query_batched(['KID1', 'KID2'])\nprint(a, kids)"
            )
        return finish("root done")

    return reply


def test_usage_is_given_per_model_per_depth_and_in_total() -> None:
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": tree_script(), "model_name": "gpt-4o-mini"},
        max_depth=2,
    )
    usage = rlm.completion("context", root_prompt="the question").usage_summary

    calls = {
        d: {m: s.total_calls for m, s in u.model_usage_summaries.items()}
        for d, u in usage.by_depth.items()
    }
    # Depth 0: the root's two turns. Depth 1: its cell's sub-call and each child's turn.
    # Depth 2: the sub-calls of the children's cells.
    assert calls == {
        0: {"gpt-4o-mini": 2},
        1: {"gpt-4.1-nano": 1, "gpt-4o-mini": 2},
        2: {"gpt-4o-mini": 2},
    }
    per_model = usage.model_usage_summaries
    assert per_model["gpt-4o-mini"].total_calls == 6 and per_model["gpt-4.1-nano"].total_calls == 1
    for model, summary in per_model.items():
        at_depths = [
            u.model_usage_summaries[model]
            for u in usage.by_depth.values()
            if model in u.model_usage_summaries
        ]
        assert summary.total_input_tokens == sum(s.total_input_tokens for s in at_depths)
        assert summary.total_output_tokens == sum(s.total_output_tokens for s in at_depths)
        assert summary.total_cost == pytest.approx(sum(s.total_cost or 0 for s in at_depths))
        tokens = LMUsage(summary.total_input_tokens, summary.total_output_tokens)
        assert summary.total_cost == pytest.approx(price(model).cost(tokens))
    assert usage.total_cost == pytest.approx(sum(s.total_cost or 0 for s in per_model.values()))
    assert usage.cost_known and usage.unpriced_models == []
    depth_costs = [u.total_cost for u in usage.by_depth.values()]
    assert usage.total_cost == pytest.approx(sum(c or 0 for c in depth_costs)) and all(depth_costs)


def test_usage_to_dict_keeps_the_rlms_shape_and_adds_fields() -> None:
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": tree_script(), "model_name": "gpt-4o-mini"},
        max_depth=2,
    )
    usage = rlm.completion("context", root_prompt="the question").usage_summary
    data = json.loads(json.dumps(usage.to_dict()))
    mini = data["model_usage_summaries"]["gpt-4o-mini"]
    summary = usage.model_usage_summaries["gpt-4o-mini"]
    # The rlms keys, with the rlms meanings.
    assert mini["total_calls"] == summary.total_calls == 6
    assert mini["total_input_tokens"] == summary.total_input_tokens
    assert mini["total_output_tokens"] == summary.total_output_tokens
    assert mini["total_cost"] == pytest.approx(summary.total_cost)
    assert data["total_cost"] == pytest.approx(usage.total_cost)
    # New keys.
    assert mini["total_cached_input_tokens"] == 0 and mini["total_cache_write_tokens"] == 0
    assert sorted(data["by_depth"]) == ["0", "1", "2"]
    assert data["by_depth"]["1"]["model_usage_summaries"]["gpt-4.1-nano"]["total_calls"] == 1
    assert "unpriced_models" not in data
    assert UsageSummary.from_dict(data) == usage
    # A reader of the old shape (rlms' from_dict reads these keys only) gets the same totals.
    old = {
        m: (
            s["total_calls"],
            s["total_input_tokens"],
            s["total_output_tokens"],
            s.get("total_cost"),
        )
        for m, s in data["model_usage_summaries"].items()
    }
    assert old["gpt-4o-mini"] == (
        6,
        summary.total_input_tokens,
        summary.total_output_tokens,
        summary.total_cost,
    )
    # And data in the old shape is read by ours.
    legacy = {
        "model_usage_summaries": {
            "m": {"total_calls": 1, "total_input_tokens": 2, "total_output_tokens": 3}
        }
    }
    assert UsageSummary.from_dict(legacy).model_usage_summaries["m"] == ModelUsageSummary(1, 2, 3)


def test_a_cost_the_backend_reports_wins_over_the_table(openai_server: LMServer) -> None:
    openai_server.cost = 0.25
    openai_server.reply = lambda body: finish("done")
    rlm = RLM(backend="openai", backend_kwargs=openai_kwargs(openai_server, "gpt-4o-mini"))
    usage = rlm.completion("c").usage_summary
    assert usage.total_calls == 1 and usage.total_cost == pytest.approx(0.25)


# -- unknown costs ----------------------------------------------------------------------------


def test_an_unpriced_model_has_unknown_cost_never_zero(openai_server: LMServer) -> None:
    openai_server.reply = lambda body: finish("done")
    rlm = RLM(backend="openai", backend_kwargs=openai_kwargs(openai_server, "local-model"))
    usage = rlm.completion("c").usage_summary
    summary = usage.model_usage_summaries["local-model"]
    assert summary.total_calls == 1 and summary.total_cost is None and summary.unpriced_calls == 1
    assert usage.total_cost is None and not usage.cost_known
    assert usage.unpriced_models == ["local-model"]
    data = usage.to_dict()
    assert "total_cost" not in data and data["unpriced_models"] == ["local-model"]
    assert data["model_usage_summaries"]["local-model"]["unpriced_calls"] == 1


def test_a_total_with_any_unknown_cost_is_unknown() -> None:
    def reply(messages: Messages) -> str:
        if messages[0]["role"] != "system":
            return "sub"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        return repl("llm_query('q', model='mystery-model')") if turn == 0 else finish("ok")

    rlm = RLM(backend="scripted", backend_kwargs={"responses": reply, "model_name": "gpt-4o-mini"})
    usage = rlm.completion("c").usage_summary
    assert usage.model_usage_summaries["gpt-4o-mini"].total_cost is not None
    assert usage.model_usage_summaries["mystery-model"].total_cost is None
    assert usage.total_cost is None and usage.unpriced_models == ["mystery-model"]
    assert usage.by_depth[0].total_cost is not None and usage.by_depth[1].total_cost is None


@pytest.mark.parametrize(
    ("backend", "kwargs", "named"),
    [
        ("openai", {"model_name": "local-model"}, "'local-model' (backend 'openai')"),
        ("scripted", {}, "'scripted' (backend 'scripted')"),
        ("openai", {}, "backend 'openai' (no model_name)"),
    ],
)
def test_max_budget_with_an_unpriced_model_is_refused_at_construction(
    openai_server: LMServer, backend: str, kwargs: dict[str, Any], named: str
) -> None:
    if backend == "openai":
        kwargs = {"base_url": openai_server.base_url, "api_key": "k", **kwargs}
    else:
        kwargs = {"responses": ["unused"], **kwargs}
    with pytest.raises(ConfigurationError, match=re.escape(named)) as info:
        RLM(backend=backend, backend_kwargs=kwargs, max_budget=1.0)
    assert "register_prices" in str(info.value)
    assert openai_server.request_count == 0


def test_max_budget_checks_the_other_backends_too() -> None:
    with pytest.raises(ConfigurationError, match="'sub-model' \\(backend 'scripted'\\)"):
        RLM(
            backend="scripted",
            backend_kwargs={"responses": ["x"], "model_name": "gpt-4o-mini"},
            other_backends=["scripted"],
            other_backend_kwargs=[{"responses": ["x"], "model_name": "sub-model"}],
            max_budget=1.0,
        )


def test_max_budget_is_accepted_when_every_cost_can_be_known(prices: Any) -> None:
    prices({"my-vllm-model": {"input": 0, "output": 0}})
    for backend, kwargs in [
        ("scripted", {"responses": ["x"], "model_name": "claude-haiku-4-5"}),
        ("scripted", {"responses": ["x"], "model_name": "my-vllm-model"}),
        ("scripted", {"responses": ["x"], "cost_per_token": 1e-6}),
        ("openai", {"base_url": "http://127.0.0.1:9/v1", "model_name": "my-vllm-model"}),
        ("openai", {"base_url": "https://openrouter.ai/api/v1", "model_name": "x/unlisted"}),
        ("openrouter", {"model_name": "x/unlisted"}),
    ]:
        RLM(backend=backend, backend_kwargs=kwargs, max_budget=0.5).close()


def test_a_call_of_unknown_cost_stops_a_budgeted_run() -> None:
    def reply(messages: Messages) -> str:
        if messages[0]["role"] != "system":
            return "sub"
        return repl("print(llm_query('q', model='mystery-model'))")

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": reply, "model_name": "gpt-4o-mini"},
        max_budget=10.0,
    )
    with pytest.raises(BudgetExceededError, match="'mystery-model' is unknown") as info:
        rlm.completion("c")
    assert info.value.budget == 10.0 and 0 < info.value.spent < 10.0


# -- max_budget stops the whole tree, on every backend ----------------------------------------

CHILDREN = 4


def tree_reply(body: dict[str, Any]) -> str:
    """Every root turn spawns four child RLMs; each child makes one sub-call and answers."""
    messages = body["messages"]
    if messages[0]["role"] != "system":
        return "a short sub-answer"
    if messages[1]["content"].startswith("Answer the following: TOP"):
        return repl(
            f"kids = rlm_query_batched(['child task %d' % i for i in range({CHILDREN})])\nprint(kids)"
        )
    return repl(
        "x = llm_query('summarise: ' + 'word ' * 200)\nanswer['content'] = x\nanswer['ready'] = True"
    )


def assert_stopped_within_the_calls_in_flight(
    error: BudgetExceededError, call_costs: list[float], in_flight: int
) -> None:
    """Spent crossed the budget, by less than ``in_flight`` of the dearest call, and every
    call made is counted."""
    budget = error.budget
    most = max(call_costs)
    assert error.spent == pytest.approx(sum(call_costs))
    assert budget <= error.spent < budget + in_flight * most


def test_max_budget_stops_a_recursive_openai_run_within_the_calls_in_flight(
    openai_server: LMServer,
) -> None:
    openai_server.reply = tree_reply
    rlm = RLM(
        backend="openai",
        backend_kwargs=openai_kwargs(openai_server, "gpt-4o-mini"),
        max_depth=2,
        max_iterations=10,
        max_concurrent_subcalls=CHILDREN,
        max_budget=0.002,
    )
    with pytest.raises(BudgetExceededError) as info:
        rlm.completion("the root context", root_prompt="TOP")
    mini = price("gpt-4o-mini")
    costs = [
        mini.cost(LMUsage(prompt_chars(r.body) // 4, len(tree_reply(r.body)) // 4))
        for r in openai_server.requests
    ]
    assert openai_server.max_concurrent <= CHILDREN
    assert_stopped_within_the_calls_in_flight(info.value, costs, CHILDREN)
    # Without the budget the ten root turns would make 10 * (1 + 4 * 2) calls.
    assert len(costs) < 10 * (1 + CHILDREN * 2)


def test_max_budget_stops_a_recursive_scripted_run_priced_from_the_table() -> None:
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def model(messages: Messages) -> str:
        reply = tree_reply({"messages": messages})
        prompt = "".join(str(m.get("content") or "") for m in messages)
        with lock:
            calls.append((estimate_tokens(prompt), estimate_tokens(reply)))
        return reply

    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": model, "model_name": "claude-haiku-4-5"},
        max_depth=2,
        max_iterations=10,
        max_concurrent_subcalls=CHILDREN,
        max_budget=0.02,
    )
    with pytest.raises(BudgetExceededError) as info:
        rlm.completion("the root context", root_prompt="TOP")
    haiku = price("claude-haiku-4-5")
    costs = [haiku.cost(LMUsage(i, o)) for i, o in calls]
    assert_stopped_within_the_calls_in_flight(info.value, costs, CHILDREN)
    assert len(costs) < 10 * (1 + CHILDREN * 2)
