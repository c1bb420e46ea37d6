"""Settings: ``rlms``'s names and defaults, checked with clear errors; capabilities per mode."""

from __future__ import annotations

import re

import pytest
from rlm_ipython.environment import InProcessIPythonEnvironment, IPythonEnvironment

from rlm_core import RLM, ConfigurationError
from rlm_core.environments.base import SEPARATE_PROCESS, TIMEOUT
from rlm_core.environments.subprocess import SubprocessEnvironment


def test_default_is_in_process() -> None:
    env = IPythonEnvironment()
    assert isinstance(env, InProcessIPythonEnvironment)
    assert env.kernel_mode == "in_process"
    assert TIMEOUT not in env.capabilities


def test_subprocess_mode_is_the_subprocess_environment() -> None:
    env = IPythonEnvironment(kernel_mode="subprocess", cell_timeout=5, memory_limit_mb=2048)
    assert isinstance(env, SubprocessEnvironment)
    assert env.capabilities == SubprocessEnvironment.capabilities
    assert (env.kernel_mode, env.cell_timeout, env.memory_limit_mb) == ("subprocess", 5, 2048)


def test_class_claims_what_both_modes_have() -> None:
    assert IPythonEnvironment.capabilities == InProcessIPythonEnvironment.capabilities
    assert SEPARATE_PROCESS not in IPythonEnvironment.capabilities


def test_rlms_settings_and_defaults() -> None:
    """``kernel_mode``, ``cell_timeout`` and ``startup_timeout`` as ``rlms`` names them."""
    settings = IPythonEnvironment.settings()
    assert settings["kernel_mode"].default == "in_process"
    assert settings["cell_timeout"].default is None
    assert settings["startup_timeout"].default == 60.0
    IPythonEnvironment(kernel_mode="in_process", startup_timeout=30.0)
    IPythonEnvironment(kernel_mode="subprocess", cell_timeout=30.0, startup_timeout=30.0)


def test_the_agent_is_told_to_run_cells_in_ipython() -> None:
    env = IPythonEnvironment(kernel_mode="subprocess", env={"MINE": "1"})
    assert env.env == {"MINE": "1", "RLM_AGENT_REPL": "rlm_ipython.namespace:IPythonNamespace"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kernel_mode": "kernel"}, "kernel_mode must be 'in_process' | 'subprocess', not str"),
        (
            {"kernel_mod": "subprocess"},
            "unknown setting 'kernel_mod' (did you mean 'kernel_mode'?)",
        ),
        ({"cell_timeout": 5}, "setting cell_timeout applies to kernel_mode='subprocess' only"),
        ({"memory_limit_mb": 512, "env": {}}, "settings env, memory_limit_mb apply to kernel_mode"),
        ({"startup_timeout": 0}, "startup_timeout must be a finite number > 0, not 0"),
        ({"kernel_mode": "subprocess", "cell_timeout": 0}, "cell_timeout must be a finite number"),
        ({"kernel_mode": "subprocess", "cell_timeout": "5"}, "cell_timeout must be float | None"),
        ({"subcall_timeout": 5.0}, "unknown setting 'subcall_timeout'"),
    ],
)
def test_bad_settings_are_clear_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        IPythonEnvironment(**settings)


def test_the_rlm_checks_settings_when_it_is_made() -> None:
    with pytest.raises(ConfigurationError, match="kernel_mode='subprocess' only"):
        RLM(
            backend="scripted",
            backend_kwargs={"responses": ["unused"]},
            environment="ipython",
            environment_kwargs={"cell_timeout": 10},
        )
    with pytest.raises(ConfigurationError, match="did you mean 'kernel_mode'"):
        RLM(
            backend="scripted",
            backend_kwargs={"responses": ["unused"]},
            environment="ipython",
            environment_kwargs={"kernel": "subprocess"},
        )
