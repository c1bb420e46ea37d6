"""Settings and arguments are checked when they are given, with messages that say what to fix.

Environment settings (``environment_kwargs``) are refused when unknown, of the wrong type or
out of range, as soon as ``RLM(...)`` (or the environment) is constructed; nonsensical RLM
arguments too; a context nested too deeply is refused before anything starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scripts import EchoHandler, Messages, finish, repl

from rlm_core import RLM, ConfigurationError, ContextError, hookimpl
from rlm_core.environments.agent import AgentEnvironment, Launcher
from rlm_core.environments.base import Session
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.subprocess import SubprocessEnvironment
from rlm_core.types import MAX_CONTEXT_DEPTH

DOCS = Path(__file__).resolve().parents[1] / "docs"


def make_rlm(**kwargs: Any) -> RLM:
    return RLM(backend="scripted", backend_kwargs={"responses": [finish("ok")]}, **kwargs)


class Recorder:
    """A scripted LM that records every call and always gives the same reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[Messages] = []

    def __call__(self, messages: Messages) -> str:
        self.calls.append(messages)
        return self.reply


def nested_list(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"inner": value}
    return value


# -- unknown settings ---------------------------------------------------------------------


def test_a_misspelled_setting_is_refused_with_a_did_you_mean_hint() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="subprocess", environment_kwargs={"cell_timout": 2})
    message = str(info.value)
    assert "'subprocess'" in message
    assert "'cell_timout'" in message
    assert "did you mean 'cell_timeout'?" in message
    assert "Valid settings:" in message
    for name in ("cell_timeout", "memory_limit_mb", "interrupt_grace", "setup_code"):
        assert name in message.split("Valid settings:")[1]


def test_every_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(
            environment="subprocess",
            environment_kwargs={"cel_timeout": 1, "memory_limt_mb": 10},
        )
    message = str(info.value)
    assert "'cel_timeout' (did you mean 'cell_timeout'?)" in message
    assert "'memory_limt_mb' (did you mean 'memory_limit_mb'?)" in message


def test_the_local_environment_refuses_settings_it_does_not_have() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="local", environment_kwargs={"cell_timeout": 2})
    message = str(info.value)
    assert "'cell_timeout'" in message and "'local'" in message
    assert "Valid settings: setup_code." in message


def test_constructing_an_environment_directly_checks_its_settings() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'cell_timeout'"):
        SubprocessEnvironment(cell_timout=1)
    with pytest.raises(ConfigurationError, match="takes no settings"):
        LocalEnvironment(cell_timeout=1)


def test_setup_code_stays_an_accepted_key() -> None:
    script = [repl("print(prepared)"), finish("done")]
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": script},
        environment="subprocess",
        environment_kwargs={"setup_code": "prepared = context.upper()", "cell_timeout": 30},
    )
    assert rlm.completion("abc").response == "done"


# -- wrong types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("cell_timeout", "5", "float | None"),
        ("tls", "yes", "bool"),
        ("memory_limit_mb", 1.5, "int | None"),
        ("heartbeat_interval", True, "float"),
        ("max_dispatch_threads", True, "int"),
        ("python", 3, "str | None"),
        ("env", {"MODE": 1}, "dict[str, str] | None"),
        ("prewarm", "no", "bool"),
        ("setup_code", 42, "str | None"),
    ],
)
def test_a_setting_of_the_wrong_type_is_refused(setting: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="subprocess", environment_kwargs={setting: value})
    message = str(info.value)
    assert setting in message
    assert f"must be {expected}, not {type(value).__name__} ({value!r})" in message


def test_an_int_is_accepted_where_a_float_is_expected() -> None:
    rlm = make_rlm(environment="subprocess", environment_kwargs={"cell_timeout": 5})
    assert rlm.completion("c").response == "ok"


# -- out of range ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "bound"),
    [
        ("heartbeat_interval", 0, "> 0"),
        ("heartbeat_interval", -1.0, "> 0"),
        ("heartbeat_timeout", 0, "> 0"),
        ("interrupt_grace", -0.5, ">= 0"),
        ("startup_timeout", 0, "> 0"),
        ("cell_timeout", 0, "> 0"),
        ("cell_timeout", -3, "> 0"),
        ("cell_timeout", math.nan, "> 0"),
        ("max_dispatch_threads", 0, ">= 1"),
        ("memory_limit_mb", -1, ">= 1"),
        ("memory_limit_mb", 0, ">= 1"),
    ],
)
def test_a_setting_out_of_range_is_refused(setting: str, value: float, bound: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="subprocess", environment_kwargs={setting: value})
    message = str(info.value)
    assert f"setting {setting} must be a finite number {bound}, not {value!r}" in message


def test_none_means_no_cell_timeout_and_no_memory_limit() -> None:
    rlm = make_rlm(
        environment="subprocess",
        environment_kwargs={"cell_timeout": None, "memory_limit_mb": None},
    )
    assert rlm.completion("c").response == "ok"


def test_heartbeats_must_come_more_often_than_the_agent_gives_up() -> None:
    with pytest.raises(ConfigurationError, match=r"heartbeat_interval .* less than"):
        make_rlm(
            environment="subprocess",
            environment_kwargs={"heartbeat_interval": 5, "heartbeat_timeout": 5},
        )


# -- plugin environments get the same checks ------------------------------------------------


class _NeverLaunched(Launcher):
    def launch(self, secrets: Any, heartbeat_timeout: float) -> Any:
        raise AssertionError("the environment was started")

    def terminate(self) -> None:
        pass


class RegionEnvironment(AgentEnvironment):
    """A third-party agent environment with one setting of its own."""

    name = "regional"
    constructed = 0

    def __init__(self, region: str = "eu", replicas: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_range("replicas", replicas, at_least=1)
        self.region = region
        RegionEnvironment.constructed += 1

    def make_launcher(self) -> Launcher:
        return _NeverLaunched()


class TaggedEnvironment(LocalEnvironment):
    """A third-party in-process environment with one setting of its own."""

    name = "tagged"

    def __init__(self, tag: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag


class NeedyEnvironment(LocalEnvironment):
    """A third-party environment with a setting that has no default."""

    name = "needy"

    def __init__(self, project: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project


class _Plugin:
    @hookimpl
    def rlm_register_environments(self, register: Callable[..., None]) -> None:
        register("regional", RegionEnvironment)
        register("tagged", TaggedEnvironment)
        register("needy", NeedyEnvironment)


@pytest.fixture
def plugin(register_plugin: Callable[[object, str], str]) -> None:
    register_plugin(_Plugin(), "settings-test-plugin")


@pytest.mark.usefixtures("plugin")
@pytest.mark.parametrize(
    ("environment", "settings", "expected"),
    [
        ("regional", {"regoin": "us"}, "did you mean 'region'?"),
        ("regional", {"cell_timout": 1}, "did you mean 'cell_timeout'?"),
        ("regional", {"region": 7}, "setting region must be str, not int"),
        ("regional", {"replicas": 0}, "setting replicas must be a finite number >= 1"),
        ("regional", {"heartbeat_timeout": -1}, "setting heartbeat_timeout must be"),
        ("tagged", {"tga": "x"}, "did you mean 'tag'?"),
        ("tagged", {"tag": ["x"]}, "setting tag must be str, not list"),
    ],
)
def test_plugin_environments_are_checked_the_same_way(
    environment: str, settings: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)) as info:
        make_rlm(environment=environment, environment_kwargs=settings)
    assert repr(environment) in str(info.value)


@pytest.mark.usefixtures("plugin")
def test_the_check_runs_at_construction_without_starting_the_environment() -> None:
    before = RegionEnvironment.constructed
    rlm = make_rlm(environment="regional", environment_kwargs={"region": "us", "tls": True})
    assert RegionEnvironment.constructed == before + 1  # constructed, never launched
    rlm.close()
    assert RegionEnvironment.settings()["region"].default == "eu"


@pytest.mark.usefixtures("plugin")
def test_a_required_plugin_setting_that_is_missing_is_named() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("'needy' environment needs the")):
        make_rlm(environment="needy")
    assert make_rlm(environment="needy", environment_kwargs={"project": "p"}).completion("c")


@pytest.mark.usefixtures("plugin")
def test_a_plugin_settings_reach_the_environment() -> None:
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [finish("ok")]},
        environment="tagged",
        environment_kwargs={"tag": "blue", "setup_code": "x = 1"},
    )
    assert rlm.completion("c").response == "ok"


# -- RLM arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("max_iterations", 0, "must be >= 1"),
        ("max_iterations", -2, "must be >= 1"),
        ("max_depth", -1, "must be >= 0"),
        ("depth", -1, "must be >= 0"),
        ("max_concurrent_subcalls", 0, "must be >= 1"),
        ("max_errors", 0, "must be >= 1"),
        ("max_budget", 0, "must be > 0"),
        ("max_budget", -1.0, "must be > 0"),
        ("max_timeout", 0, "must be > 0"),
        ("max_timeout", math.nan, "must be > 0"),
        ("max_tokens", 0, "must be >= 1"),
        ("compaction_threshold_pct", 0, "must be in (0, 1]"),
        ("compaction_threshold_pct", 1.5, "must be in (0, 1]"),
        ("max_iterations", "3", "must be int, not str"),
        ("max_iterations", True, "must be int, not bool"),
        ("max_tokens", 1.5, "must be int | None, not float"),
        ("max_budget", "1", "must be float | None, not str"),
    ],
)
def test_nonsensical_rlm_arguments_are_refused(argument: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"RLM argument {argument} {expected}")):
        make_rlm(**{argument: value})


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_depth": 0},
        {"max_iterations": 1},
        {"max_errors": 1},
        {"max_timeout": 60},
        {"max_tokens": 1_000_000},
        {"max_concurrent_subcalls": 1},
        {"compaction_threshold_pct": 1.0},
    ],
)
def test_meaningful_rlm_arguments_are_accepted(arguments: dict[str, Any]) -> None:
    assert make_rlm(**arguments).completion("c").response


def test_an_int_max_budget_is_accepted_when_costs_are_known() -> None:
    kwargs = {"responses": [finish("ok")], "cost_per_token": 1e-6}
    assert RLM(backend="scripted", backend_kwargs=kwargs, max_budget=1).completion("c").response


def test_max_depth_zero_makes_completion_a_plain_lm_call() -> None:
    rlm = RLM(backend="scripted", backend_kwargs={"responses": ["plain"]}, max_depth=0)
    assert rlm.completion("question").response == "plain"


# -- deeply nested contexts -----------------------------------------------------------------


@pytest.mark.parametrize("environment", ["local", "subprocess"])
@pytest.mark.parametrize("make", [nested_list, nested_dict])
def test_a_context_nested_100000_levels_deep_is_refused_before_anything_starts(
    environment: str, make: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any) -> None:
        raise AssertionError("the environment was started")

    monkeypatch.setattr(LocalEnvironment, "start", never)
    monkeypatch.setattr(SubprocessEnvironment, "start", never)
    lm = Recorder(finish("x"))
    rlm = RLM(backend="scripted", backend_kwargs={"responses": lm}, environment=environment)
    with pytest.raises(ContextError) as info:
        rlm.completion(make(100_000))
    message = str(info.value)
    assert message.startswith("context 0 ")
    assert f"nested more than {MAX_CONTEXT_DEPTH} levels deep" in message
    assert lm.calls == []


def test_a_deep_context_at_max_depth_is_refused_before_the_lm_is_called() -> None:
    lm = Recorder("x")
    rlm = RLM(backend="scripted", backend_kwargs={"responses": lm}, max_depth=0)
    with pytest.raises(ContextError, match="context 0"):
        rlm.completion(nested_list(100_000))
    assert lm.calls == []


def test_the_context_named_is_the_one_being_added() -> None:
    script = [finish("first"), finish("second")]
    with RLM(backend="scripted", backend_kwargs={"responses": script}, persistent=True) as rlm:
        assert rlm.completion("flat").response == "first"
        with pytest.raises(ContextError, match=r"^context 1 "):
            rlm.completion(nested_list(MAX_CONTEXT_DEPTH + 1))


@pytest.mark.parametrize("environment", ["local", "subprocess"])
def test_a_context_at_the_maximum_depth_is_loaded(environment: str) -> None:
    code = "d = 0\nx = context\nwhile isinstance(x, list):\n    x = x[0]\n    d += 1"
    script = [repl(code + "\nanswer['content'] = str(d)\nanswer['ready'] = True")]
    rlm = RLM(backend="scripted", backend_kwargs={"responses": script}, environment=environment)
    assert rlm.completion(nested_list(MAX_CONTEXT_DEPTH)).response == str(MAX_CONTEXT_DEPTH)


def test_adding_a_deep_context_to_an_environment_directly_is_refused() -> None:
    with LocalEnvironment() as env:
        env.start(Session(subcalls=EchoHandler()))
        with pytest.raises(ContextError, match=r"^context 0 "):
            env.add_context(nested_list(MAX_CONTEXT_DEPTH + 1))
        assert env.get_context_count() == 0


@pytest.mark.parametrize("persistent", [False, True])
def test_a_completion_walks_its_context_for_depth_once(
    persistent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm_core.environments.base as base
    import rlm_core.rlm as loop
    import rlm_core.types as types

    walked: list[int] = []

    def counting(payload: Any, index: int = 0) -> None:
        walked.append(index)
        types.check_context(payload, index)

    monkeypatch.setattr(loop, "check_context", counting)
    monkeypatch.setattr(base, "check_context", counting)
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"responses": [finish("ok")] * 2},
        persistent=persistent,
    )
    try:
        for _ in range(2):
            assert rlm.completion([["a"]] * 3).response == "ok"
    finally:
        rlm.close()
    assert walked == ([0, 1] if persistent else [0, 0])


def test_a_context_that_contains_itself_is_refused_as_such_not_as_a_deep_one() -> None:
    # No environment can serialise it, so every environment refuses it the same way.
    looped: list[Any] = ["a"]
    looped.append(looped)
    rlm = make_rlm()
    with pytest.raises(ContextError, match="contains itself") as raised:
        rlm.completion(looped)
    assert "nested more than" not in str(raised.value)


# -- the docs list every setting -----------------------------------------------------------


def _documented_settings() -> dict[str, tuple[str, str]]:
    text = (DOCS / "environments.md").read_text(encoding="utf-8")
    section = text.split("## Settings are checked", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2].strip("`"))
    return rows


def test_the_docs_list_every_subprocess_setting_with_its_type_and_default() -> None:
    documented = _documented_settings()
    declared = SubprocessEnvironment.settings()
    assert set(documented) == set(declared)
    for name, setting in declared.items():
        assert documented[name] == (setting.type_name, repr(setting.default)), name
