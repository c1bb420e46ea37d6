"""Trajectory logging in the ``rlms`` JSON-lines format.

Each completion gets its own file: one ``{"type": "metadata", ...}`` line followed by one
``{"type": "iteration", "iteration": N, ...}`` line per loop turn, as ``rlms`` writes them,
so existing log readers keep working. Three keys are added to that format: ``depth`` on the
metadata line (the RLM's recursion depth), ``root_usage`` on each iteration (usage of the
RLM's own LM calls in that turn) and ``depth`` on each sub-call record. A child RLM's
trajectory is nested in the ``metadata`` of the ``rlm_query`` record that made it.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime
from typing import Any

from rlm_core.types import RLMIteration, RLMMetadata, UsageSummary


def usage_delta(before: UsageSummary, after: UsageSummary) -> dict[str, Any]:
    """The usage recorded between two snapshots, in the ``UsageSummary.to_dict`` shape.

    Every numeric field of a model's summary is subtracted; a model without new calls is
    left out, and ``total_cost`` is kept only where ``after`` knows it.
    """
    old = before.to_dict()["model_usage_summaries"]
    models: dict[str, dict[str, Any]] = {}
    for model, now in after.to_dict()["model_usage_summaries"].items():
        prev = old.get(model, {})
        diff = {
            key: value - prev.get(key, 0)
            for key, value in now.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if diff.get("total_calls", 0) > 0:
            models[model] = diff
    out: dict[str, Any] = {"model_usage_summaries": models}
    costs = [m["total_cost"] for m in models.values() if "total_cost" in m]
    if costs:
        out["total_cost"] = sum(costs)
    return out


class RLMLogger:
    """Captures each completion's trajectory; with ``log_dir`` also writes it to a file.

    ``log_dir=None`` keeps the trajectory in memory only (it is attached to
    ``RLMChatCompletion.metadata``). ``log_dir="path"`` additionally writes every
    completion to its own ``path/{file_name}_{timestamp}_{id}.jsonl``: ``log_file_path`` is
    the current (or next) completion's file and ``log_file_paths`` every file written.
    """

    def __init__(self, log_dir: str | None = None, file_name: str = "rlm") -> None:
        self.log_dir = log_dir
        self.file_name = file_name
        self.log_file_path: str | None = None
        self.log_file_paths: list[str] = []
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            self.log_file_path = self._new_path(log_dir)
        self._lock = threading.Lock()
        self._run_metadata: dict[str, Any] | None = None
        self._iterations: list[dict[str, Any]] = []
        self._depth = 0
        self._file_started = False

    def _new_path(self, log_dir: str) -> str:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        return os.path.join(log_dir, f"{self.file_name}_{stamp}_{uuid.uuid4().hex[:8]}.jsonl")

    def _metadata(self) -> dict[str, Any] | None:
        if self._run_metadata is None:
            return None
        return {**self._run_metadata, "depth": self._depth}

    def _write(self, *entries: dict[str, Any]) -> None:
        """Append ``entries`` to the current file, headed by the metadata line when the
        file is new."""
        if self.log_file_path is None:
            return
        lines = list(entries)
        if not self._file_started:
            self._file_started = True
            self.log_file_paths.append(self.log_file_path)
            metadata = self._metadata()
            if metadata is not None:
                lines.insert(0, {"type": "metadata", "timestamp": _now(), **metadata})
        with open(self.log_file_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(line, default=str) + "\n" for line in lines)

    def log_metadata(self, metadata: RLMMetadata) -> None:
        """Record the RLM's configuration (only the first call has an effect); it heads the
        file of every completion."""
        with self._lock:
            if self._run_metadata is None:
                self._run_metadata = metadata.to_dict()

    def start_completion(self, depth: int = 0) -> None:
        """Begin a new trajectory for a completion of an RLM at recursion ``depth``: clear
        the iterations and, with ``log_dir``, start the completion's own file."""
        with self._lock:
            self._depth = depth
            self._iterations = []
            if self.log_file_path is None:
                return
            if self._file_started and self.log_dir:
                self.log_file_path = self._new_path(self.log_dir)
                self._file_started = False
            self._write()

    def clear_iterations(self) -> None:
        """Start a new trajectory at the current depth (see :meth:`start_completion`)."""
        self.start_completion(self._depth)

    def log(self, iteration: RLMIteration, root_usage: dict[str, Any] | None = None) -> None:
        """Record one iteration; ``root_usage`` is the usage of the RLM's own LM calls in it
        (see :func:`usage_delta`)."""
        with self._lock:
            entry = {
                "type": "iteration",
                "iteration": len(self._iterations) + 1,
                "timestamp": _now(),
                **iteration.to_dict(),
            }
            if root_usage is not None:
                entry["root_usage"] = root_usage
            for block in entry["code_blocks"]:
                for call in block["result"]["rlm_calls"]:
                    call.setdefault("depth", self._depth + 1)
            self._iterations.append(entry)
            self._write(entry)

    def get_trajectory(self) -> dict[str, Any] | None:
        """``{"run_metadata": ..., "iterations": [...]}`` of the current completion, or
        ``None`` before any metadata was recorded."""
        with self._lock:
            metadata = self._metadata()
            if metadata is None:
                return None
            return {"run_metadata": metadata, "iterations": list(self._iterations)}

    @property
    def iteration_count(self) -> int:
        """Iterations recorded for the current completion."""
        return len(self._iterations)


def _now() -> str:
    return datetime.now().isoformat()
