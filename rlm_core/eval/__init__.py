"""Evaluate RLM configurations over task suites: ``rlm eval`` and :func:`run`.

    from rlm_core.eval import run
    done = run("niah", {"name": "rlm", "backend": "scripted"}, baseline=True)
    print(done.to_markdown())

Bundled suites are generated (no download, deterministic by seed, any context length):
``niah``, ``oolong``, ``oolong-pairs``, ``codeqa`` and ``all``. A suite may also be a JSONL
file (:mod:`rlm_core.eval.tasks`). Runs are resumable, run locally on threads or on a Ray
cluster, and are summarised side by side per configuration. See ``docs/eval.md``.

Names are imported on first use, so the ``rlm`` command can build its parser cheaply.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "EvalRun": "rlm_core.eval.api",
    "run": "rlm_core.eval.api",
    "RunConfig": "rlm_core.eval.config",
    "config_from_dict": "rlm_core.eval.config",
    "load_config": "rlm_core.eval.config",
    "Summary": "rlm_core.eval.report",
    "TaskResult": "rlm_core.eval.results",
    "Suite": "rlm_core.eval.suites",
    "builtin_names": "rlm_core.eval.suites",
    "load_suite": "rlm_core.eval.suites",
    "Task": "rlm_core.eval.tasks",
    "read_tasks": "rlm_core.eval.tasks",
    "write_tasks": "rlm_core.eval.tasks",
}

__all__ = [
    "EvalRun",
    "RunConfig",
    "Suite",
    "Summary",
    "Task",
    "TaskResult",
    "builtin_names",
    "config_from_dict",
    "load_config",
    "load_suite",
    "read_tasks",
    "run",
    "write_tasks",
]

if TYPE_CHECKING:
    from rlm_core.eval.api import EvalRun, run
    from rlm_core.eval.config import RunConfig, config_from_dict, load_config
    from rlm_core.eval.report import Summary
    from rlm_core.eval.results import TaskResult
    from rlm_core.eval.suites import Suite, builtin_names, load_suite
    from rlm_core.eval.tasks import Task, read_tasks, write_tasks


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_core.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
