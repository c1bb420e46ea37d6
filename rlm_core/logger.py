"""Trajectory logging in the ``rlms`` JSON-lines format.

A log file holds one ``{"type": "metadata", ...}`` line per run followed by one
``{"type": "iteration", "iteration": N, ...}`` line per loop turn, exactly as ``rlms``
writes them, so existing log viewers keep working.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime
from typing import Any

from rlm_core.types import RLMIteration, RLMMetadata


class RLMLogger:
    """Captures run metadata and iterations; with ``log_dir`` also appends them to a file.

    ``log_dir=None`` keeps the trajectory in memory only (it is attached to
    ``RLMChatCompletion.metadata``); ``log_dir="path"`` additionally writes
    ``path/{file_name}_{timestamp}_{id}.jsonl``.
    """

    def __init__(self, log_dir: str | None = None, file_name: str = "rlm") -> None:
        self.log_dir = log_dir
        self.log_file_path: str | None = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            self.log_file_path = os.path.join(
                log_dir, f"{file_name}_{stamp}_{uuid.uuid4().hex[:8]}.jsonl"
            )
        self._lock = threading.Lock()
        self._run_metadata: dict[str, Any] | None = None
        self._iterations: list[dict[str, Any]] = []

    def _write(self, entry: dict[str, Any]) -> None:
        if self.log_file_path is None:
            return
        with open(self.log_file_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def log_metadata(self, metadata: RLMMetadata) -> None:
        """Record the run configuration (only the first call has an effect)."""
        with self._lock:
            if self._run_metadata is not None:
                return
            self._run_metadata = metadata.to_dict()
            self._write(
                {"type": "metadata", "timestamp": datetime.now().isoformat(), **self._run_metadata}
            )

    def log(self, iteration: RLMIteration) -> None:
        """Record one iteration."""
        with self._lock:
            entry = {
                "type": "iteration",
                "iteration": len(self._iterations) + 1,
                "timestamp": datetime.now().isoformat(),
                **iteration.to_dict(),
            }
            self._iterations.append(entry)
            self._write(entry)

    def clear_iterations(self) -> None:
        """Start a new trajectory (called at the start of every completion)."""
        with self._lock:
            self._iterations = []

    def get_trajectory(self) -> dict[str, Any] | None:
        """``{"run_metadata": ..., "iterations": [...]}``, or ``None`` before metadata."""
        with self._lock:
            if self._run_metadata is None:
                return None
            return {"run_metadata": self._run_metadata, "iterations": list(self._iterations)}

    @property
    def iteration_count(self) -> int:
        """Iterations recorded for the current completion."""
        return len(self._iterations)
