"""Read a trajectory log (rlm-core or ``rlms`` 0.1.3) into the tree the viewer page draws.

The page gets one JSON document::

    {"file": name, "format": "rlm-core" | "rlms", "skipped_lines": [...],
     "runs": [{"metadata", "depth", "model", "iterations", "usage", "totals"}]}

where every iteration holds its cells and every cell its sub-calls; a sub-call that made a
child RLM (``kind == "child"``) holds the child's own iterations. Iteration prompts keep only
the messages that are new since the iteration before, and very long strings are clipped, so
the page stays about as large as what the models wrote and printed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlm_core.exceptions import RLMError
from rlm_core.viewer.usage import Usage, usage_rows

MAX_TEXT = 100_000
"""Characters of one string shown on the page; the rest is replaced by a note."""

MAX_LOCAL = 2_000
"""Characters shown of one REPL variable's logged value."""


class ViewerError(RLMError):
    """The viewer cannot do what was asked (a bad log file, a port in use)."""


class LogFileError(ViewerError):
    """A log file is missing, unreadable, or not a trajectory log."""


def clip(value: Any, limit: int = MAX_TEXT) -> Any:
    """``value`` with every string longer than ``limit`` cut short (with a note) and every
    non-finite float as ``None``."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[:limit] + f"\n... [{len(value) - limit} more characters not shown]"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [clip(v, limit) for v in value]
    if isinstance(value, dict):
        return {str(k): clip(v, limit) for k, v in value.items()}
    return value


def read_entries(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects of a JSON-lines file and the numbers of the lines that were not."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LogFileError(f"log file not found: {path}") from None
    except IsADirectoryError:
        raise LogFileError(f"log file is a directory: {path}") from None
    except OSError as exc:
        raise LogFileError(f"cannot read log file {path}: {exc.strerror or exc}") from None
    entries: list[dict[str, Any]] = []
    skipped: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            skipped.append(number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            skipped.append(number)
    return entries, skipped


def _split_runs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group entries into completions: a metadata line, or an iteration number that does not
    grow, starts a new one (``rlms`` appends every completion of a logger to one file)."""
    runs: list[dict[str, Any]] = []
    for entry in entries:
        kind = entry.get("type")
        if kind == "metadata":
            meta = {k: v for k, v in entry.items() if k != "type"}
            runs.append({"run_metadata": meta, "iterations": []})
        elif kind == "iteration" or "code_blocks" in entry:
            number = entry.get("iteration")
            last = runs[-1]["iterations"] if runs else None
            restart = (
                last
                and isinstance(number, int)
                and isinstance(last[-1].get("iteration"), int)
                and number <= last[-1]["iteration"]
            )
            if not runs or restart:
                same = runs[-1]["run_metadata"] if runs else None
                runs.append({"run_metadata": same, "iterations": []})
            runs[-1]["iterations"].append(entry)
    return runs


def _prompt_view(prompt: Any, previous: Any) -> dict[str, Any]:
    """The messages of ``prompt`` that ``previous`` (the iteration before) did not have;
    the last message when it had them all."""
    if not isinstance(prompt, list):
        return {"count": 1, "skipped": 0, "messages": [{"role": "prompt", "content": prompt}]}
    start = 0
    if isinstance(previous, list):
        start = len(previous) if len(previous) < len(prompt) else max(len(prompt) - 1, 0)
    shown = [m if isinstance(m, dict) else {"role": "?", "content": m} for m in prompt[start:]]
    return {"count": len(prompt), "skipped": start, "messages": shown}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _call(record: dict[str, Any], depth: int) -> dict[str, Any]:
    """One sub-call record: a plain LM call, or a child RLM with its own trajectory."""
    meta = _dict(record.get("metadata"))
    is_child = isinstance(meta.get("iterations"), list)
    call_depth = _int(record.get("depth"), depth + 1)
    out: dict[str, Any] = {
        "kind": "child" if is_child else "subcall",
        "depth": call_depth,
        "model": str(record.get("root_model") or "unknown"),
        "prompt": record.get("prompt"),
        "response": record.get("response"),
        "time": _number(record.get("execution_time")),
        "error": record.get("error"),
        "usage": Usage.from_summary(record.get("usage_summary")).to_json(),
    }
    if is_child:
        out["child"] = _trajectory(meta.get("run_metadata"), meta["iterations"], call_depth)
    return out


def _cell(block: Any, depth: int) -> dict[str, Any]:
    block = _dict(block)
    result = _dict(block.get("result"))
    return {
        "code": block.get("code", ""),
        "stdout": result.get("stdout") or "",
        "stderr": result.get("stderr") or "",
        "error": result.get("error"),
        "time": _number(result.get("execution_time")),
        "final_answer": result.get("final_answer"),
        "locals": {
            str(k): clip(v if isinstance(v, str) else json.dumps(v, default=str), MAX_LOCAL)
            for k, v in _dict(result.get("locals")).items()
        },
        "calls": [_call(r, depth) for r in _list(result.get("rlm_calls")) if isinstance(r, dict)],
    }


def _iteration(entry: dict[str, Any], number: int, previous: Any, depth: int) -> dict[str, Any]:
    root_usage = entry.get("root_usage")
    return {
        "n": _int(entry.get("iteration"), number),
        "timestamp": entry.get("timestamp"),
        "time": _number(entry.get("iteration_time")),
        "prompt": _prompt_view(entry.get("prompt"), previous),
        "response": entry.get("response") or "",
        "final_answer": entry.get("final_answer"),
        "root_usage": (
            Usage.from_summary(root_usage).to_json() if isinstance(root_usage, dict) else None
        ),
        "cells": [_cell(b, depth) for b in _list(entry.get("code_blocks"))],
    }


def _trajectory(metadata: Any, iterations: list[Any], depth: int) -> dict[str, Any]:
    """A run or child RLM: its configuration, depth and iterations."""
    meta = metadata if isinstance(metadata, dict) else None
    depth = _int(_dict(meta).get("depth"), depth)
    entries = [i for i in iterations if isinstance(i, dict)]
    previous = [None, *(e.get("prompt") for e in entries)]
    return {
        "metadata": meta,
        "depth": depth,
        "model": str(meta.get("root_model") or "unknown") if meta else None,
        "iterations": [_iteration(e, n, previous[n - 1], depth) for n, e in enumerate(entries, 1)],
    }


def load_log(path: str | Path) -> dict[str, Any]:
    """Read the log at ``path`` into the document the viewer page renders.

    Raises :class:`LogFileError` when the file is missing or holds no metadata or iteration
    line.
    """
    entries, skipped = read_entries(path)
    runs = _split_runs(entries)
    if not runs:
        raise LogFileError(
            f"{path} is not an RLM trajectory log: it has no metadata or iteration lines"
        )
    out_runs = []
    for run in runs:
        tree = _trajectory(run["run_metadata"], run["iterations"], 0)
        rows, totals = usage_rows(tree)
        out_runs.append({**tree, "usage": rows, "totals": totals})
    ours = any("depth" in _dict(r["run_metadata"]) for r in runs) or any(
        "root_usage" in i for r in runs for i in r["iterations"]
    )
    document: dict[str, Any] = clip(
        {
            "file": Path(path).name,
            "format": "rlm-core" if ours else "rlms",
            "skipped_lines": skipped,
            "runs": out_runs,
        }
    )
    return document
