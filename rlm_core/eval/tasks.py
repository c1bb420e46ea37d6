"""Tasks and suite files: one JSON object a line.

A task gives its context inline (``context``), as a file (``context_file``, relative to the
suite file) or as a generator reference (``generator``, ``params``, ``seed``,
``context_length``), plus ``question``, ``answer`` and ``scorer`` (a generator supplies
those it is not given). ``id`` is optional (a hash of the task's content by default);
``context_sha256`` makes a generated task fail loudly if the generator no longer produces
the same context.

    {"id": "niah-8k-0000", "generator": "niah", "params": {"needles": 1}, "seed": 0,
     "context_length": 8192, "question": "...", "answer": "4821937", "scorer": "exact"}
    {"context": "Alice met Bob in Paris.", "question": "Where did they meet?",
     "answer": "Paris", "scorer": "contains"}
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_core.eval.generators import generate
from rlm_core.exceptions import ConfigurationError, RLMError
from rlm_core.tokens import CHARS_PER_TOKEN

FIELDS = (
    "id",
    "question",
    "answer",
    "scorer",
    "context",
    "context_file",
    "generator",
    "params",
    "seed",
    "context_length",
    "context_sha256",
)
"""Every key a task line may have."""


class TaskError(RLMError):
    """A task cannot be prepared: its context file is missing, or its generator no longer
    produces the context it was written with."""


@dataclass(frozen=True)
class Prepared:
    """A task ready to run: its context, question, answer and scorer."""

    context: Any
    question: str
    answer: Any
    scorer: str
    context_length: int


def context_sha256(context: Any) -> str:
    """SHA-256 of a context (its JSON form unless it is a string)."""
    text = context if isinstance(context, str) else json.dumps(context, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Task:
    """One question of a suite (see the module docstring for the fields)."""

    id: str
    question: str | None = None
    answer: Any = None
    scorer: str | None = None
    context: Any = None
    context_file: str | None = None
    generator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    context_length: int | None = None
    context_sha256: str | None = None

    @property
    def family(self) -> str:
        """The generator's name, or ``"custom"`` for a task with its own context."""
        return self.generator or "custom"

    def prepare(self) -> Prepared:
        """Build the context (running the generator or reading the file) and fill in the
        question, answer and scorer the task does not give."""
        if self.generator is not None:
            made = generate(self.generator, self.params, self.seed, self.context_length or 0)
            if self.context_sha256 and context_sha256(made.context) != self.context_sha256:
                raise TaskError(
                    f"task {self.id}: generator {self.generator!r} now produces a different "
                    "context than the suite was written with (for codeqa: another Python "
                    "version's standard library); write the suite again"
                )
            return Prepared(
                made.context,
                self.question or made.question,
                made.answer if self.answer is None else self.answer,
                self.scorer or made.scorer,
                self.context_length or len(made.context) // CHARS_PER_TOKEN,
            )
        context = self.context
        if self.context_file is not None:
            try:
                context = Path(self.context_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise TaskError(f"task {self.id}: cannot read context_file: {exc}") from None
        text = context if isinstance(context, str) else json.dumps(context)
        return Prepared(
            context,
            str(self.question),
            self.answer,
            self.scorer or "exact",
            self.context_length or len(text) // CHARS_PER_TOKEN,
        )

    def to_dict(self) -> dict[str, Any]:
        """The task as a suite line (unset fields left out)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None or (name == "params" and not value):
                continue
            if name == "seed" and self.generator is None:
                continue
            out[name] = value
        return out

    def written(self) -> Task:
        """This task with its generated question, answer, scorer and context hash filled
        in, so the suite line says what it asks and notices a changed generator."""
        if self.generator is None:
            return self
        made = generate(self.generator, self.params, self.seed, self.context_length or 0)
        return Task(
            id=self.id,
            question=self.question or made.question,
            answer=made.answer if self.answer is None else self.answer,
            scorer=self.scorer or made.scorer,
            generator=self.generator,
            params=dict(self.params),
            seed=self.seed,
            context_length=self.context_length,
            context_sha256=context_sha256(made.context),
        )


def default_id(data: Mapping[str, Any]) -> str:
    """A stable id from a task's content (for lines that give none)."""
    keys = ("context", "context_file", "generator", "params", "seed", "context_length", "question")
    content = json.dumps({k: data.get(k) for k in keys}, sort_keys=True, default=str)
    return "task-" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]


def _check_type(where: str, name: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise ConfigurationError(f"{where}: {name} must be {what}, not {value!r}")


def task_from_dict(data: Mapping[str, Any], where: str, base: Path | None = None) -> Task:
    """Validate one suite line; ``base`` resolves a relative ``context_file``."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: a task must be a JSON object")
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"{where}: unknown task field {key!r}{hint}")
    sources = [k for k in ("context", "context_file", "generator") if data.get(k) is not None]
    if len(sources) != 1:
        raise ConfigurationError(
            f"{where}: a task needs exactly one of context, context_file or generator"
        )
    if data.get("generator") is None:
        for needed in ("question", "answer"):
            if data.get(needed) is None:
                raise ConfigurationError(f"{where}: a task without a generator needs {needed!r}")
    _check_type(where, "id", data.get("id"), (str, int), "a string")
    _check_type(where, "question", data.get("question"), (str,), "a string")
    _check_type(where, "scorer", data.get("scorer"), (str,), "a string")
    _check_type(where, "generator", data.get("generator"), (str,), "a string")
    _check_type(where, "seed", data.get("seed"), (int,), "an integer")
    _check_type(where, "context_length", data.get("context_length"), (int,), "an integer")
    _check_type(where, "params", data.get("params"), (dict,), "an object")
    context_file = data.get("context_file")
    if context_file is not None:
        path = Path(str(context_file))
        context_file = str(path if path.is_absolute() or base is None else base / path)
    return Task(
        id=str(data.get("id") or default_id(data)),
        question=data.get("question"),
        answer=data.get("answer"),
        scorer=data.get("scorer"),
        context=data.get("context"),
        context_file=context_file,
        generator=data.get("generator"),
        params=dict(data.get("params") or {}),
        seed=int(data.get("seed") or 0),
        context_length=data.get("context_length"),
        context_sha256=data.get("context_sha256"),
    )


def check_unique(tasks: Iterable[Task], where: str) -> None:
    """:class:`ConfigurationError` when two tasks share an id."""
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise ConfigurationError(f"{where}: task id {task.id!r} appears twice")
        seen.add(task.id)


def read_tasks(path: str | Path) -> list[Task]:
    """Read a suite file (JSON lines; blank lines and ``#`` comments are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read suite {path}: {exc.strerror or exc}") from None
    tasks: list[Task] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{where}: not JSON: {exc.msg}") from None
        tasks.append(task_from_dict(data, where, path.parent))
    check_unique(tasks, str(path))
    return tasks


def write_tasks(tasks: Iterable[Task], path: str | Path) -> int:
    """Write a suite file, generated tasks with their question, answer and context hash;
    return how many tasks were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(task.written().to_dict()) + "\n")
            count += 1
    return count
