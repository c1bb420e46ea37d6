"""Fixtures: an ``ipython`` environment started in each kernel mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rlm_conformance.doubles import RecordingSubcalls
from rlm_ipython.environment import IPythonEnvironment

from rlm_core.environments.base import Environment, Session

StartEnv = Callable[..., Environment]


@pytest.fixture
def start_env() -> Iterator[StartEnv]:
    """``start_env(**settings)``: a started ``ipython`` environment, closed after the test."""
    started: list[Environment] = []

    def start(**settings: Any) -> Environment:
        env = IPythonEnvironment(**settings)
        started.append(env)
        env.start(Session(subcalls=RecordingSubcalls()))
        return env

    try:
        yield start
    finally:
        for env in started:
            env.close()


@pytest.fixture(params=["in_process", "subprocess"])
def env(request: pytest.FixtureRequest, start_env: StartEnv) -> Environment:
    """A started ``ipython`` environment in each kernel mode."""
    return start_env(kernel_mode=request.param)
