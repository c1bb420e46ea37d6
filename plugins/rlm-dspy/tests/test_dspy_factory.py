"""``interpreter_factory``: lookup by name, settings, instructions, versions."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import dspy
import pytest
import rlm_dspy
from dspy.primitives.code_interpreter import CodeInterpreter
from packaging.requirements import Requirement

from rlm_core import (
    ConfigurationError,
    Environment,
    UnknownEnvironmentError,
    get_registry,
    hookimpl,
)
from rlm_core.environments.local import LocalEnvironment
from rlm_core.plugins import PROVIDER_DISTRIBUTIONS
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF

pytestmark = pytest.mark.timeout(120)

TESTED_DSPY_VERSIONS = ("3.4.1",)
"""DSPy releases this suite has been run against (see the README's compatibility notes)."""


class WalledEnvironment(LocalEnvironment):
    """A third-party environment claiming isolation and no network (for its description)."""

    name = "dspy-walled"
    capabilities = LocalEnvironment.capabilities | {ISOLATED, NETWORK_OFF}


class WalledPlugin:
    @hookimpl
    def rlm_register_environments(self, register: Any) -> None:
        register("dspy-walled", WalledEnvironment)


@pytest.fixture
def walled_plugin() -> Iterator[None]:
    registry = get_registry()
    registry.register(WalledPlugin(), name="dspy-walled-plugin")
    try:
        yield
    finally:
        registry.unregister("dspy-walled-plugin")


def test_the_factory_makes_a_new_interpreter_per_call() -> None:
    factory = rlm_dspy.interpreter_factory("local")
    assert not isinstance(factory, CodeInterpreter)  # what dspy.RLM requires of a factory
    made: list[Any] = []
    threads = [threading.Thread(target=lambda: made.append(factory())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(interpreter) for interpreter in made}) == 8
    assert all(isinstance(interpreter, CodeInterpreter) for interpreter in made)
    assert all(not interpreter.started for interpreter in made)
    assert repr(copy.deepcopy(factory)) == "interpreter_factory('local')"
    dspy.RLM("question -> answer", interpreter_factory=factory)  # accepted as a factory


def test_unknown_environment_names_the_installed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'nope'") as caught:
        rlm_dspy.interpreter_factory("nope")
    assert "local" in str(caught.value) and "subprocess" in str(caught.value)
    name, dist = "acme-cloud", "rlm-acme-cloud"  # known, not installed (real ones may be)
    monkeypatch.setitem(PROVIDER_DISTRIBUTIONS, name, dist)
    with pytest.raises(UnknownEnvironmentError, match=f"pip install {dist}"):
        rlm_dspy.interpreter_factory(name)
    with pytest.raises(TypeError, match="environment name"):
        rlm_dspy.interpreter_factory(LocalEnvironment)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("environment", "settings", "message"),
    [
        ("subprocess", {"cell_timout": 30}, "did you mean 'cell_timeout'"),
        ("subprocess", {"cell_timeout": "30"}, "must be float | None, not str"),
        ("subprocess", {"memory_limit_mb": -1}, "memory_limit_mb must be a finite number"),
        ("local", {"cell_timeout": 5}, "'timeout' capability"),
        ("loopback", {"carrier": "stdio", "tls": "yes"}, "tls must be bool"),
    ],
)
def test_settings_the_environment_rejects(
    environment: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        rlm_dspy.interpreter_factory(environment, **settings)


def test_execution_instructions_follow_capabilities_and_settings() -> None:
    local = rlm_dspy.interpreter_factory("local").execution_instructions
    assert "host's own process" in local and "not a sandbox" in local
    assert "cannot be interrupted" in local
    limited = rlm_dspy.interpreter_factory(
        "subprocess", cell_timeout=5, memory_limit_mb=2048
    ).execution_instructions
    assert "separate process" in limited and "'subprocess'" in limited
    assert "at most 5 seconds" in limited and "2048 MB" in limited
    assert "not a security sandbox" in limited and "writable working directory" in limited
    assert "no time limit" in rlm_dspy.interpreter_factory("loopback").execution_instructions
    for text in (local, limited):
        assert "Network access is not restricted" in text
        assert "SUBMIT" in text and "JSON-compatible" in text


def test_third_party_environments_are_found_by_name(walled_plugin: None) -> None:
    factory = rlm_dspy.interpreter_factory("dspy-walled")
    assert "isolated from the host" in factory.execution_instructions
    assert "no network access" in factory.execution_instructions
    interpreter = factory()
    try:
        assert isinstance(interpreter.environment, WalledEnvironment)
        assert isinstance(interpreter.environment, Environment)
        assert interpreter.execute("6 * 7") == 42
    finally:
        interpreter.shutdown()


def test_the_installed_dspy_is_within_the_declared_range() -> None:
    requirements = [Requirement(r) for r in metadata.requires("rlm-dspy") or []]
    declared = next(r for r in requirements if r.name == "dspy")
    assert declared.specifier.contains(dspy.__version__)
    for version in TESTED_DSPY_VERSIONS:
        assert declared.specifier.contains(version)
