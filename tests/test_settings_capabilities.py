"""Settings and budgets that need a capability the chosen environment lacks.

A well-known setting (``cell_timeout``) given to an environment without the capability it
needs (``timeout``) is refused with that reason and the built-in environments that have it,
for every environment, a plugin's included. ``max_timeout`` on such an environment warns,
once, that it is checked only between cells.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import pytest
from scripts import finish

from rlm_core import RLM, ConfigurationError, Environment, RLMWarning, hookimpl
from rlm_core.environments.base import (
    CAPABILITY_NOTES,
    PERSISTENT,
    SETTING_CAPABILITIES,
    SUBCALLS,
    TIMEOUT,
    Session,
)
from rlm_core.environments.local import LocalEnvironment
from rlm_core.environments.settings import declared_settings
from rlm_core.plugins import DEFAULT_PLUGINS, get_registry
from rlm_core.types import REPLResult

LACKS_TIMEOUT = (
    "cell_timeout needs the 'timeout' capability (a running cell can be interrupted), "
    "which the {env} environment does not have; the built-in environment 'subprocess' has it."
)


def make_rlm(**kwargs: Any) -> RLM:
    return RLM(backend="scripted", backend_kwargs={"responses": [finish("ok")]}, **kwargs)


class PlainEnvironment(Environment):
    """A plugin-style environment: settings of its own, no ``timeout`` capability."""

    name = "plain-plugin"
    capabilities: ClassVar[frozenset[str]] = frozenset({PERSISTENT, SUBCALLS})

    def __init__(self, region: str = "here", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region

    def start(self, session: Session) -> None:
        pass

    def load_context(self, payload: Any, index: int) -> None:
        pass

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        return REPLResult()

    def get_variable(self, name: str) -> Any:
        raise KeyError(name)

    def set_variable(self, name: str, value: Any) -> None:
        pass

    def close(self) -> None:
        pass


class InterruptingEnvironment(PlainEnvironment):
    """Claims ``timeout`` but calls its setting something else."""

    name = "interrupting-plugin"
    capabilities: ClassVar[frozenset[str]] = frozenset({PERSISTENT, SUBCALLS, TIMEOUT})

    def __init__(self, deadline_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline_seconds = deadline_seconds


class KernelEnvironment(PlainEnvironment):
    """Gains ``timeout`` from a setting (a kernel in a process of its own)."""

    name = "kernel-plugin"

    def __init__(self, separate: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if separate:
            self.capabilities = type(self).capabilities | {TIMEOUT}


class Plugin:
    @hookimpl
    def rlm_register_environments(self, register: Any) -> None:
        register(PlainEnvironment.name, PlainEnvironment)
        register(InterruptingEnvironment.name, InterruptingEnvironment)
        register(KernelEnvironment.name, KernelEnvironment)


@pytest.fixture
def plugin(register_plugin: Any) -> None:
    register_plugin(Plugin(), "settings-capabilities-plugin")


# -- settings that need a capability ----------------------------------------------------------


def test_cell_timeout_on_local_says_which_capability_is_missing() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="local", environment_kwargs={"cell_timeout": 1})
    message = str(info.value)
    assert message.startswith("unknown setting 'cell_timeout' for the 'local' environment. ")
    assert LACKS_TIMEOUT.format(env="'local'") in message
    assert message.endswith("Valid settings: setup_code.")


def test_constructing_local_directly_gives_the_same_reason() -> None:
    with pytest.raises(ConfigurationError) as info:
        LocalEnvironment(cell_timeout=1)
    message = str(info.value)
    assert LACKS_TIMEOUT.format(env="'local'") in message
    assert message.endswith("The 'local' environment takes no settings.")


def test_several_settings_needing_one_capability_are_named_together() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(
            environment="local",
            environment_kwargs={"cell_timeout": 1, "interrupt_grace": 2, "colour": "red"},
        )
    message = str(info.value)
    assert "'cell_timeout', 'interrupt_grace', 'colour'" in message
    assert "cell_timeout and interrupt_grace need the 'timeout' capability" in message
    assert message.count("capability") == 1  # colour is merely unknown


def test_a_plugin_environment_without_timeout_gets_the_same_message(plugin: None) -> None:
    expected = LACKS_TIMEOUT.format(env="'plain-plugin'")
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="plain-plugin", environment_kwargs={"cell_timeout": 1})
    assert expected in str(info.value)
    assert str(info.value).endswith("Valid settings: region, setup_code.")
    with pytest.raises(ConfigurationError) as info:
        PlainEnvironment(cell_timeout=1)
    assert expected in str(info.value)
    assert str(info.value).endswith("Valid settings: region.")


def test_an_environment_with_timeout_gets_no_capability_reason(plugin: None) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="interrupting-plugin", environment_kwargs={"cell_timeout": 1})
    message = str(info.value)
    assert "unknown setting 'cell_timeout'" in message
    assert "capability" not in message


def test_a_misspelling_gets_no_capability_reason() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_rlm(environment="subprocess", environment_kwargs={"cell_timout": 1})
    assert "did you mean 'cell_timeout'?" in str(info.value)
    assert "capability" not in str(info.value)


def test_the_capability_table_is_true_of_the_built_in_environments() -> None:
    builtins = [r for r in get_registry().environments() if r.plugin in DEFAULT_PLUGINS]
    assert {r.name for r in builtins} >= {"local", "subprocess"}
    for capability, note in CAPABILITY_NOTES.items():
        having = {r.name for r in builtins if capability in r.capabilities}
        assert note.builtin_environments, capability
        assert set(note.builtin_environments) <= having, capability
    for setting, capability in SETTING_CAPABILITIES.items():
        assert capability in CAPABILITY_NOTES
        for registration in builtins:
            declared = setting in declared_settings(registration.factory)
            assert declared == (capability in registration.capabilities), (
                setting,
                registration.name,
            )


# -- max_timeout where a running cell cannot be interrupted ------------------------------------


def _rlm_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RLMWarning)]


def test_max_timeout_on_local_warns_once_that_it_is_checked_between_cells() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rlm = make_rlm(environment="local", max_timeout=5)
        assert rlm.completion("a context").response == "ok"
    [message] = _rlm_warnings(caught)
    assert "max_timeout=5 is checked only between cells on the 'local' environment" in message
    assert "'timeout' capability (a running cell can be interrupted)" in message
    assert "environment='subprocess'" in message
    assert caught[0].filename == __file__  # reported at the user's RLM(...) line


def test_max_timeout_on_a_plugin_environment_without_timeout_warns(plugin: None) -> None:
    with pytest.warns(RLMWarning, match="only between cells on the 'plain-plugin' environment"):
        make_rlm(environment="plain-plugin", max_timeout=2.5)


@pytest.mark.parametrize(
    ("environment", "max_timeout"),
    [("local", None), ("interrupting-plugin", 5.0), ("subprocess", 5.0)],
)
def test_no_warning_when_the_budget_can_be_kept(
    plugin: None, environment: str, max_timeout: float | None
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rlm = make_rlm(environment=environment, max_timeout=max_timeout)
    rlm.close()
    assert _rlm_warnings(caught) == []


def test_max_timeout_warns_by_the_capabilities_of_the_settings_given(plugin: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_rlm(environment="kernel-plugin", environment_kwargs={"separate": True}, max_timeout=2)
    assert not [w for w in caught if issubclass(w.category, RLMWarning)]
    with pytest.warns(RLMWarning, match="checked only between cells"):
        make_rlm(environment="kernel-plugin", max_timeout=2)
