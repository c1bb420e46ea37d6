"""The resumable result store: ``results.jsonl`` in the run's output directory.

One JSON line per finished task, appended with a single ``write`` and made durable with
``fsync`` before the next one, keyed by (configuration, task id). Opening the store reads
what is there, so a run that was killed continues where it stopped: finished keys are
skipped, nothing is written twice. A line cut short by a kill is ignored (its task runs
again). ``configs.json`` remembers each configuration's fingerprint, so reusing an output
directory with a changed configuration of the same name is refused instead of mixing
results. An exclusive lock keeps two runs from writing to one directory at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlm_core.eval.config import RunConfig
from rlm_core.eval.results import Key, TaskResult
from rlm_core.exceptions import ConfigurationError

RESULTS = "results.jsonl"
CONFIGS = "configs.json"


class ResultStore:
    """Results of a run, in memory and, with ``out_dir``, in ``out_dir/results.jsonl``."""

    def __init__(self, out_dir: str | Path | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.path = self.out_dir / RESULTS if self.out_dir is not None else None
        self.ignored_lines = 0
        self._results: dict[Key, TaskResult] = {}
        self._fd: int | None = None
        if self.out_dir is not None and self.path is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                self._fd = None
                raise ConfigurationError(
                    f"another run is writing to {self.out_dir}; wait for it or use another --out"
                ) from None
            self._load()

    def _load(self) -> None:
        assert self.path is not None and self._fd is not None
        data = self.path.read_bytes()
        for line in data.splitlines():
            try:
                result = TaskResult.from_dict(json.loads(line))
            except (ValueError, TypeError):
                self.ignored_lines += 1
                continue
            self._results.setdefault(result.key, result)
        if data and not data.endswith(b"\n"):  # a line cut short: start the next one fresh
            os.write(self._fd, b"\n")
            os.fsync(self._fd)

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def __len__(self) -> int:
        return len(self._results)

    def results(self, keys: Iterable[Key] | None = None) -> list[TaskResult]:
        """Stored results (of ``keys`` only, in that order, when given)."""
        if keys is None:
            return list(self._results.values())
        return [self._results[k] for k in keys if k in self._results]

    def append(self, result: TaskResult) -> bool:
        """Store ``result`` durably; ``False`` (and nothing written) if its key is stored."""
        if result.key in self._results:
            return False
        if self._fd is not None:
            line = json.dumps(result.to_dict(), default=str) + "\n"
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)
        self._results[result.key] = result
        return True

    def check_configs(self, configs: Iterable[RunConfig]) -> None:
        """Refuse configurations whose name was used in this directory with other
        settings; record the new ones in ``configs.json``."""
        if self.out_dir is None:
            return
        path = self.out_dir / CONFIGS
        known: dict[str, Any] = {}
        if path.exists():
            try:
                known = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                known = {}
        for config in configs:
            entry = known.get(config.name)
            if entry is not None and entry.get("fingerprint") != config.fingerprint():
                raise ConfigurationError(
                    f"configuration {config.name!r} differs from the one whose results are in "
                    f"{self.out_dir}; rename it or use another --out"
                )
            known[config.name] = {
                "fingerprint": config.fingerprint(),
                "config": config.public_dict(),
            }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def close(self) -> None:
        """Release the file (and the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
