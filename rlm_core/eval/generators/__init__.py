"""Task generators: seeded functions that build a context, a question and its exact answer.

A generator is ``generate(params, seed, context_length) -> Generated``. The same arguments
always give the same task, so a suite stores only the reference (name, params, seed) and each
worker rebuilds the context where the task runs. Built-in generators:

* ``niah``: needle retrieval in filler prose (one or several needles, with distractors);
* ``oolong``: aggregation over labelled records (counting, most and least frequent,
  comparisons);
* ``oolong_pairs``: the pairs of users whose records meet a condition (set F1);
* ``codeqa``: questions about the installed Python standard library's source.

``"package.module:function"`` names any other generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlm_core.eval.references import load_object
from rlm_core.exceptions import ConfigurationError


@dataclass(frozen=True)
class Generated:
    """One generated task: the context, the question, the exact answer and how to score it."""

    context: str
    question: str
    answer: Any
    scorer: str


Generator = Callable[[Mapping[str, Any], int, int], Generated]
"""``generate(params, seed, context_length)``."""

BUILTIN: dict[str, str] = {
    "niah": "rlm_core.eval.generators.niah:generate",
    "oolong": "rlm_core.eval.generators.oolong:generate",
    "oolong_pairs": "rlm_core.eval.generators.pairs:generate",
    "codeqa": "rlm_core.eval.generators.codeqa:generate",
}
"""Built-in generator names and where they live."""


def resolve(name: str) -> Generator:
    """The generator called ``name`` (built-in) or referenced as ``module:function``."""
    reference = BUILTIN.get(name, name)
    if ":" not in reference:
        known = ", ".join(sorted(BUILTIN))
        raise ConfigurationError(f"unknown generator {name!r}; built-in: {known}")
    generator = load_object(reference, "generator")
    if not callable(generator):
        raise ConfigurationError(f"generator {name!r} is not callable")
    return generator  # type: ignore[no-any-return]


def generate(name: str, params: Mapping[str, Any], seed: int, context_length: int) -> Generated:
    """Run generator ``name``."""
    result = resolve(name)(params, seed, context_length)
    if not isinstance(result, Generated):
        raise ConfigurationError(f"generator {name!r} returned {type(result).__name__}")
    return result
