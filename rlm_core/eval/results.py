"""The record of one task run under one configuration (one line of ``results.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

Key = tuple[str, str]
"""``(configuration name, task id)``: what a resumed run skips when it is already stored."""


@dataclass
class TaskResult:
    """What running one task under one configuration gave.

    ``score`` is in [0, 1] (0 when the run failed); ``latency`` is seconds from creating
    the RLM to its answer; tokens, calls and cost cover every LM call of the task (``cost``
    is ``None`` when the provider reports none). ``error_type`` is the exception's class
    name; ``retryable`` marks failures worth running again (an LM call that failed after the
    backend's own retries, a crashed sandbox). ``worker`` is ``host:pid`` of the process
    that ran it.
    """

    config: str
    task_id: str
    family: str
    context_length: int
    score: float
    prediction: str | None
    answer: Any
    scorer: str
    latency: float
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    cost: float | None = None
    error_type: str | None = None
    error: str | None = None
    retryable: bool = False
    attempts: int = 1
    log_file: str | None = None
    worker: str = ""
    finished_at: float = 0.0

    @property
    def key(self) -> Key:
        """``(config, task_id)``."""
        return (self.config, self.task_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line (a shallow copy of the fields)."""
        return {name: getattr(self, name) for name in _NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in _NAMES})


_NAMES = tuple(f.name for f in fields(TaskResult))
