"""rlm-conformance: the shared test suite for rlm-core sandbox environments.

Run it on an installed environment::

    pytest --pyargs rlm_conformance --rlm-environment NAME [--rlm-environment-kwargs JSON]
    rlm conformance NAME [--kwargs JSON]

or subclass :class:`EnvironmentTests` in your own test suite and provide the environment
through the ``environment_setup`` fixture. See ``docs/conformance.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pytest

pytest.register_assert_rewrite("rlm_conformance.suite", "rlm_conformance.fixtures")

_EXPORTS = {
    "AGENT": "rlm_conformance.setup",
    "CASES": "rlm_conformance.cases",
    "GROUPS": "rlm_conformance.suite",
    "Case": "rlm_conformance.cases",
    "EnvironmentSetup": "rlm_conformance.setup",
    "EnvironmentTests": "rlm_conformance.suite",
    "LocalAgentEnvironment": "rlm_conformance.doubles",
    "LocalAgentLauncher": "rlm_conformance.doubles",
    "RecordingSubcalls": "rlm_conformance.doubles",
    "Script": "rlm_conformance.doubles",
    "case": "rlm_conformance.cases",
    "finish": "rlm_conformance.doubles",
    "repl": "rlm_conformance.doubles",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use: the pytest plugin that pytest loads in every
    run imports this package, and must not load the suite (or gRPC) unless it is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_conformance' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from rlm_conformance.cases import CASES, Case, case
    from rlm_conformance.doubles import (
        LocalAgentEnvironment,
        LocalAgentLauncher,
        RecordingSubcalls,
        Script,
        finish,
        repl,
    )
    from rlm_conformance.setup import AGENT, EnvironmentSetup
    from rlm_conformance.suite import GROUPS, EnvironmentTests

__all__ = [
    "AGENT",
    "CASES",
    "GROUPS",
    "Case",
    "EnvironmentSetup",
    "EnvironmentTests",
    "LocalAgentEnvironment",
    "LocalAgentLauncher",
    "RecordingSubcalls",
    "Script",
    "case",
    "finish",
    "repl",
]
