"""Small helpers the standard tests share."""

from __future__ import annotations

import json
from typing import Any

from rlm_core.environments.base import Environment
from rlm_core.types import REPLResult


def ok(env: Environment, code: str) -> str:
    """Run ``code``; fail the test if the cell raised; return its stdout."""
    result = env.execute(code)
    assert result.error is None, f"the cell failed: {result.error}\n{result.stderr}"
    return result.stdout


def value(env: Environment, expression: str) -> Any:
    """The JSON value of ``expression`` evaluated in a cell."""
    out = ok(env, f"import json as _json\nprint(_json.dumps({expression}))")
    return json.loads(out.strip().splitlines()[-1])


def failed(result: REPLResult) -> str:
    """The cell's error line; fails the test when the cell did not fail."""
    assert result.error is not None, f"the cell was expected to fail; stdout: {result.stdout!r}"
    return result.error


PROCESS_OF_CELL = """
import json as _json, os as _os
def _ident(pid):
    with open(f"/proc/{pid}/stat") as f:
        return [pid, int(f.read().rsplit(")", 1)[1].split()[19])]
print(_json.dumps(_ident(_os.getpid())))
"""
"""A cell printing its own process's identity ``[pid, start time]``."""
