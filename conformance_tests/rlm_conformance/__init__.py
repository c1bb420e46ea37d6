"""rlm-conformance: the shared test suite for rlm-core sandbox environments.

Run it on an installed environment::

    pytest --pyargs rlm_conformance --rlm-environment NAME [--rlm-environment-kwargs JSON]
    rlm conformance NAME [--kwargs JSON]

or subclass :class:`EnvironmentTests` in your own test suite and provide the environment
through the ``environment_setup`` fixture. See ``docs/conformance.md``.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("rlm_conformance.suite", "rlm_conformance.fixtures")

from rlm_conformance.cases import CASES, Case, case  # noqa: E402
from rlm_conformance.doubles import (  # noqa: E402
    LocalAgentEnvironment,
    LocalAgentLauncher,
    RecordingSubcalls,
    Script,
    finish,
    repl,
)
from rlm_conformance.setup import AGENT, EnvironmentSetup  # noqa: E402
from rlm_conformance.suite import GROUPS, EnvironmentTests  # noqa: E402

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
