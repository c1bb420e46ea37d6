"""Fixtures of the rlm-dspy tests, loaded with ``pytest_plugins = ("dspy_fixtures",)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dspy_doubles import ENVIRONMENTS, MakeInterpreter, environment_name
from rlm_dspy import RLMCoreInterpreter


@pytest.fixture(params=list(ENVIRONMENTS))
def env_id(request: pytest.FixtureRequest) -> str:
    """Each environment of :data:`ENVIRONMENTS` in turn."""
    return str(request.param)


@pytest.fixture
def make_interpreter(env_id: str) -> Iterator[MakeInterpreter]:
    """Creates interpreters on the current environment; all are shut down afterwards."""
    made: list[RLMCoreInterpreter] = []

    def make(
        tools: dict[str, Any] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        **settings: Any,
    ) -> RLMCoreInterpreter:
        interpreter = RLMCoreInterpreter(
            tools,
            output_fields,
            environment=environment_name(env_id),
            environment_kwargs={**ENVIRONMENTS[env_id], **settings},
        )
        made.append(interpreter)
        return interpreter

    yield make
    for interpreter in made:
        interpreter.shutdown()
