"""Questions about real source code: modules of the installed Python standard library.

The context is whole source files (chosen by the seed, up to about ``context_length``
tokens), each after a header line. Answers are computed with :mod:`ast` from exactly the
files in the context, so they hold for the interpreter that generated the task; a suite
written out with ``context_sha256`` notices when another interpreter's library differs.

``params``: ``question`` (one of :data:`QUESTIONS`; default: chosen by the seed).

Parsing goes through :func:`parse_module`, which lets one thread at a time build an AST:
CPython 3.11's AST constructor keeps its recursion counter per interpreter, so two threads
building ASTs at once can fail with ``SystemError: AST constructor recursion depth
mismatch`` (python/cpython#106905).
"""

from __future__ import annotations

import ast
import os
import re
import sysconfig
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from rlm_core.eval.generators import Generated
from rlm_core.eval.generators.text import rng_for, target_chars

SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        "__phello__",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "tkinter",
        "turtledemo",
    }
)
"""Standard-library directories left out (tests, bundled data, third-party packages)."""

HEADER = "# ==== module {module} (file {path}) ===="
HEADER_RE = re.compile(r"^# ==== module (?P<module>\S+) \(file (?P<path>\S+)\) ====$", re.M)
GUIDE = (
    "The text is the source code of several modules of the Python standard library, each "
    "after a header line '# ==== module NAME (file PATH) ===='."
)
IMPORTED = ("os", "re", "sys", "io", "functools", "collections", "itertools", "types", "warnings")
"""Modules the ``count_importers`` question may ask about."""

QUESTIONS: dict[str, str] = {
    "function_module": (
        "Which module defines the top-level function `{name}`? "
        "Answer with the dotted module name only."
    ),
    "class_module": (
        "Which module defines the top-level class `{name}`? "
        "Answer with the dotted module name only."
    ),
    "count_functions": (
        "How many top-level functions (def or async def statements directly in the module "
        "body) does the module `{name}` define? Answer with the number only."
    ),
    "count_classes": (
        "How many top-level classes (class statements directly in the module body) does the "
        "module `{name}` define? Answer with the number only."
    ),
    "count_importers": (
        "How many of the modules import the module `{name}` (with `import {name}`, "
        "`import {name}.<submodule>`, `from {name} import ...` or "
        "`from {name}.<submodule> import ...`, anywhere in the module)? "
        "Answer with the number only."
    ),
}
"""The question of each kind (after :data:`GUIDE`)."""


@dataclass(frozen=True)
class ModuleFacts:
    """What the questions ask about one module."""

    module: str
    path: str
    source: str
    functions: tuple[str, ...]
    classes: tuple[str, ...]
    imports: frozenset[str]


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


@lru_cache(maxsize=1)
def corpus() -> tuple[tuple[str, int], ...]:
    """``(relative path, size in bytes)`` of every candidate ``.py`` file, sorted by path."""
    root = stdlib_root()
    found: list[tuple[str, int]] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in files:
            if name.endswith(".py"):
                path = Path(directory, name)
                found.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return tuple(sorted(found))


def module_name(path: str) -> str:
    """``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST) -> frozenset[str]:
    """Top-level names of the modules a tree imports (absolute imports, anywhere)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(names)


_AST_LOCK = threading.Lock()


def parse_module(source: str) -> ast.Module:
    """``ast.parse(source)``, one thread at a time (see the module docstring)."""
    with _AST_LOCK:
        return ast.parse(source)


def outline(source: str) -> dict[str, list[str]] | None:
    """A module's top-level ``functions`` and ``classes`` (in order) and the modules it
    ``imports`` (sorted), or ``None`` when it is not valid Python."""
    try:
        tree = parse_module(source)
    except (SyntaxError, ValueError):
        return None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        "functions": [n.name for n in tree.body if isinstance(n, kinds)],
        "classes": [n.name for n in tree.body if isinstance(n, ast.ClassDef)],
        "imports": sorted(imported_modules(tree)),
    }


@cache
def facts(path: str) -> ModuleFacts | None:
    """The facts of one file, or ``None`` when it cannot be read or parsed."""
    try:
        source = (stdlib_root() / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = outline(source)
    if found is None:
        return None
    return ModuleFacts(
        module_name(path),
        path,
        source,
        tuple(found["functions"]),
        tuple(found["classes"]),
        frozenset(found["imports"]),
    )


def block(module: ModuleFacts) -> str:
    """A module as it appears in the context."""
    return HEADER.format(module=module.module, path=module.path) + "\n" + module.source


def select(seed: int, context_length: int) -> list[ModuleFacts]:
    """Whole files, in a seeded order, that fit in about ``context_length`` tokens."""
    rng = rng_for("codeqa-files", seed, context_length)
    candidates = list(corpus())
    rng.shuffle(candidates)
    budget = target_chars(context_length)
    chosen: list[ModuleFacts] = []
    used = 0
    for path, size in candidates:
        if used + size + 80 > budget:
            continue
        module = facts(path)
        if module is None:
            continue
        cost = len(block(module)) + 1
        if used + cost <= budget:
            chosen.append(module)
            used += cost
    if not chosen:  # smaller than any file: the smallest one
        for path, _ in sorted(candidates, key=lambda c: c[1]):
            module = facts(path)
            if module is not None:
                return [module]
    return chosen


def _unique(modules: list[ModuleFacts], field: str) -> dict[str, str]:
    owners: dict[str, list[str]] = {}
    for module in modules:
        for name in getattr(module, field):
            owners.setdefault(name, []).append(module.module)
    return {name: found[0] for name, found in owners.items() if len(found) == 1 and len(name) > 4}


def generate(params: Mapping[str, Any], seed: int, context_length: int) -> Generated:
    """One question about the modules in a seeded context."""
    kinds = sorted(QUESTIONS)
    rng = rng_for("codeqa-question", seed, context_length)
    kind = str(params.get("question") or rng.choice(kinds))
    if kind not in QUESTIONS:
        raise ValueError(f"codeqa question must be one of {kinds}, not {kind!r}")
    modules = select(seed, context_length)
    context = "\n".join(block(m) for m in modules)
    answer: Any
    if kind in ("function_module", "class_module"):
        owners = _unique(modules, "functions" if kind == "function_module" else "classes")
        if not owners:
            kind = "count_functions" if kind == "function_module" else "count_classes"
        else:
            name = rng.choice(sorted(owners))
            answer = owners[name]
    if kind in ("count_functions", "count_classes"):
        field = "functions" if kind == "count_functions" else "classes"
        rich = [m for m in modules if getattr(m, field)] or modules
        module = rng.choice(rich)
        name, answer = module.module, len(getattr(module, field))
    elif kind == "count_importers":
        present = [n for n in IMPORTED if any(n in m.imports for m in modules)] or ["os"]
        name = rng.choice(present)
        answer = sum(1 for m in modules if name in m.imports)
    question = f"{GUIDE} {QUESTIONS[kind].format(name=name)}"
    scorer = "numeric" if isinstance(answer, int) else "exact"
    return Generated(context, question, answer, scorer)
