"""Turning what a cell reported into what DSPy's ``CodeInterpreter.execute`` returns or raises.

The runner reports one outcome per request (see :mod:`rlm_dspy.sandbox_runner`); it maps as
DSPy's own interpreters map theirs: a last-expression value (else the printed output, else
``None``), :class:`FinalOutput` for ``SUBMIT``, ``SyntaxError``, and
:class:`CodeExecutionError` with the text ``"Type: message"`` that DSPy feeds back to the model.
Anything the REPL itself reports as the cell's error means the runner did not finish: a
cell timeout (terminal), or a runner the code removed (:class:`RunnerMissing`).
"""

from __future__ import annotations

import json
from typing import Any

from dspy.primitives.code_interpreter import CodeExecutionError, FinalOutput

from rlm_core import REPLResult
from rlm_dspy.sandbox import RUN_FUNCTION


class SessionLost(Exception):
    """The sandbox can no longer be trusted with this session (reported as terminal)."""


class RunnerMissing(Exception):
    """The code deleted or rebound the runner; it must be installed again."""


def printed(result: REPLResult) -> str:
    """What the code printed, stdout then stderr, without trailing newlines."""
    return (result.stdout + result.stderr).rstrip("\n")


def outcome_of(result: REPLResult, request_id: int) -> Any:
    """The value ``execute`` returns for ``result``, or the exception it raises."""
    error = result.error
    if error is not None:
        if error.startswith("CellTimeout"):
            raise SessionLost(error)
        if error.startswith("NameError") and repr(RUN_FUNCTION) in error:
            raise RunnerMissing(error)
        raise CodeExecutionError(error)
    try:
        outcome = json.loads(result.final_answer or "")
    except ValueError:
        outcome = None
    if not isinstance(outcome, dict) or outcome.get("id") != request_id:
        raise SessionLost("the sandbox did not report the outcome of the code")
    kind = outcome.get("kind")
    if kind == "result":
        value = outcome.get("value")
        return value if value is not None else (printed(result) or None)
    if kind == "final":
        return FinalOutput(outcome.get("value"))
    if kind == "syntax":
        raise SyntaxError(outcome.get("error"))
    if kind == "error":
        raise CodeExecutionError(outcome.get("error"))
    raise SessionLost(f"the sandbox reported an unknown outcome: {kind!r}")
