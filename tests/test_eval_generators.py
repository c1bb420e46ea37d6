"""Task generators and suites: deterministic by seed, sized as asked, and their answers
recomputed here from the generated text alone (with this file's own parsing)."""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rlm_core.eval.generators import Generated, generate
from rlm_core.eval.generators import codeqa as codeqa_module
from rlm_core.eval.generators.records import LABELS, TEMPLATES
from rlm_core.eval.scripted import label_of
from rlm_core.eval.suites import (
    builtin_tasks,
    length_label,
    load_suite,
    parse_length,
    parse_lengths,
)
from rlm_core.eval.tasks import Task, TaskError, read_tasks, write_tasks
from rlm_core.exceptions import ConfigurationError

# -- determinism and size -------------------------------------------------------------------

CASES = [
    ("niah", {}),
    ("niah", {"needles": 3, "distractors": 5}),
    ("oolong", {}),
    ("oolong_pairs", {}),
    ("codeqa", {}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_same_seed_same_task_other_seed_other_task(name: str, params: dict[str, Any]) -> None:
    first = generate(name, params, 7, 4096)
    assert generate(name, params, 7, 4096) == first
    other = generate(name, params, 8, 4096)
    assert other.context != first.context


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("length", [2048, 16384, 65536])
def test_context_fills_about_the_requested_length(
    name: str, params: dict[str, Any], length: int
) -> None:
    context = generate(name, params, 1, length).context
    chars = 4 * length
    assert len(context) <= chars + 200
    low = 0.6 if name == "codeqa" else 0.97  # whole source files do not fill exactly
    assert len(context) >= low * chars


def test_string_seeding_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "from rlm_core.eval.generators import generate; print(generate('oolong', {}, 3, 2048))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


# -- NIAH -------------------------------------------------------------------------------------

NEEDLE = re.compile(r"The special magic number for ([a-z]+-[a-z]+) is (\d{7})\.")


def _asked_key(question: str) -> str:
    match = re.search(r"magic numbers? for ([a-z]+-[a-z]+)", question)
    assert match, question
    return match.group(1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("needles", "distractors"), [(1, 0), (1, 4), (3, 4), (5, 10)])
def test_niah_answer_is_what_the_text_says(seed: int, needles: int, distractors: int) -> None:
    made = generate("niah", {"needles": needles, "distractors": distractors}, seed, 8192)
    key = _asked_key(made.question)
    found = NEEDLE.findall(made.context)
    assert len(found) == needles + distractors
    mine = sorted(number for k, number in found if k == key)
    assert len(mine) == needles
    others = [k for k, _ in found if k != key]
    assert len(others) == distractors
    assert all(set(k.split("-")) & set(key.split("-")) for k in others)  # similar keys
    if needles == 1:
        assert made.answer == mine[0] and made.scorer == "exact"
    else:
        assert made.answer == mine and made.scorer == "set_f1"


# -- OOLONG -----------------------------------------------------------------------------------

OPENINGS = {
    "What does": "abbreviation",
    "What is the full form": "abbreviation",
    "What kind of animal": "entity",
    "Which instrument": "entity",
    "What colour": "entity",
    "Why": "description",
    "How does": "description",
    "What is the meaning": "description",
    "Who": "human",
    "Which person": "human",
    "Where": "location",
    "In which country": "location",
    "How many": "numeric",
    "When": "numeric",
    "How much": "numeric",
}
"""This file's own reading of an instance's category."""

LINE = re.compile(r"^Date: [A-Z][a-z]{2} \d{2}, 2023 \|\| User: (\d{5}) \|\| Instance: (.+)$")


def _records(context: str) -> list[tuple[int, str]]:
    """``(user, label)`` of every record line."""
    rows = []
    for line in context.split("\n"):
        match = LINE.match(line)
        assert match, line
        text = match.group(2)
        labels = {v for k, v in OPENINGS.items() if text.startswith(k + " ")}
        assert len(labels) == 1, text
        rows.append((int(match.group(1)), labels.pop()))
    return rows


def test_every_template_has_one_reading() -> None:
    for label, templates in TEMPLATES.items():
        for template in templates:
            text = template.format(
                abbr="NASA",
                animal="otter",
                thing="the compass",
                place="Oslo",
                landmark="Machu Picchu",
                topic="tides",
                role="judge",
            )
            assert {v for k, v in OPENINGS.items() if text.startswith(k + " ")} == {label}
            assert label_of(text) == label  # the stand-in sub-LM reads it the same way


def _oolong_truth(made: Generated) -> Any:
    rows = _records(made.context)
    counts = Counter(label for _, label in rows)
    q = made.question.split("asks for a number, an amount or a date). ", 1)[1]
    if match := re.match(r"How many records have the label '(\w+)'\?", q):
        return counts[match.group(1)]
    if q.startswith("Which label occurs most often"):
        return max(LABELS, key=lambda name: counts[name])
    if q.startswith("Which label occurs least often"):
        return min(LABELS, key=lambda name: counts[name])
    if match := re.match(r"Is the label '(\w+)' .* as the label '(\w+)'", q):
        a, b = counts[match.group(1)], counts[match.group(2)]
        return "more common" if a > b else "less common" if a < b else "same frequency"
    match = re.match(r"How many records of user (\d+) have the label '(\w+)'\?", q)
    assert match, q
    user, label = int(match.group(1)), match.group(2)
    return sum(1 for u, lab in rows if u == user and lab == label)


@pytest.mark.parametrize(
    "question", ["count", "most_common", "least_common", "compare", "user_count"]
)
@pytest.mark.parametrize("seed", range(4))
def test_oolong_answer_is_recounted_from_the_records(question: str, seed: int) -> None:
    made = generate("oolong", {"question": question}, seed, 8192)
    assert _oolong_truth(made) == made.answer
    counts = sorted(Counter(label for _, label in _records(made.context)).values())
    if question in ("most_common", "least_common"):
        assert counts[-1] != counts[-2] and counts[0] != counts[1]  # one right answer
    assert made.scorer == ("numeric" if isinstance(made.answer, int) else "exact")


# -- OOLONG-Pairs -----------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["one_label", "either_label", "both_labels"])
@pytest.mark.parametrize(("seed", "length"), [(0, 4096), (1, 8192), (2, 32768)])
def test_pairs_answer_is_recomputed_from_the_records(question: str, seed: int, length: int) -> None:
    made = generate("oolong_pairs", {"question": question}, seed, length)
    labels_of: dict[int, set[str]] = {}
    for user, label in _records(made.context):
        labels_of.setdefault(user, set()).add(label)
    wanted = re.findall(r"label '(\w+)'", made.question.split("date). ", 1)[1])
    if question == "one_label":
        ok = [u for u, found in labels_of.items() if wanted[0] in found]
    elif question == "either_label":
        ok = [u for u, found in labels_of.items() if found & set(wanted)]
    else:
        ok = [u for u, found in labels_of.items() if set(wanted) <= found]
        decoys = [u for u, found in labels_of.items() if len(found & set(wanted)) == 1]
        assert decoys  # users with just one of the two labels are in the text
    pairs = [[a, b] for a, b in itertools.combinations(sorted(ok), 2)]
    assert made.answer == pairs
    assert 6 <= len(pairs) <= 45
    assert made.scorer == "pairs_f1"


# -- CodeQA -----------------------------------------------------------------------------------

HEADER = re.compile(r"^# ==== module (\S+) \(file (\S+)\) ====$", re.M)


def _modules(context: str) -> dict[str, tuple[str, ast.Module]]:
    heads = list(HEADER.finditer(context))
    out = {}
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        end = following.start() if following else len(context)
        source = context[head.end() + 1 : end]
        out[head.group(1)] = (head.group(2), ast.parse(source))
    return out


def _imports(tree: ast.Module, name: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == name for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == name
        ):
            return True
    return False


@pytest.mark.parametrize(
    "question",
    ["function_module", "class_module", "count_functions", "count_classes", "count_importers"],
)
@pytest.mark.parametrize(("seed", "length"), [(0, 8192), (1, 32768)])
def test_codeqa_answer_is_recomputed_from_the_sources(
    question: str, seed: int, length: int
) -> None:
    made = generate("codeqa", {"question": question}, seed, length)
    modules = _modules(made.context)
    assert modules
    root = codeqa_module.stdlib_root()
    for module, (path, _) in modules.items():  # the real files, whole
        source = (root / path).read_text(encoding="utf-8")
        assert made.context.count(source) >= 1, module
    name = re.findall(r"`([\w.]+)`", made.question)[0]
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    if question in ("function_module", "class_module"):
        kinds = defs if question == "function_module" else (ast.ClassDef,)
        owners = [
            m
            for m, (_, tree) in modules.items()
            if any(isinstance(s, kinds) and s.name == name for s in tree.body)
        ]
        assert owners == [made.answer]
    elif question == "count_functions":
        assert made.answer == sum(isinstance(s, defs) for s in modules[name][1].body)
    elif question == "count_classes":
        assert made.answer == sum(isinstance(s, ast.ClassDef) for s in modules[name][1].body)
    else:
        assert made.answer == sum(_imports(tree, name) for _, tree in modules.values())


def test_codeqa_module_names() -> None:
    assert codeqa_module.module_name("json/decoder.py") == "json.decoder"
    assert codeqa_module.module_name("json/__init__.py") == "json"
    assert codeqa_module.module_name("os.py") == "os"
    paths = [path for path, _ in codeqa_module.corpus()]
    assert "json/decoder.py" in paths
    assert not [p for p in paths if p.startswith(("test/", "idlelib/", "site-packages/"))]


# -- suites and suite files -------------------------------------------------------------------


def test_lengths() -> None:
    assert parse_length("8k") == 8192
    assert parse_length("1M") == 1024 * 1024
    assert parse_length("5000") == 5000
    assert parse_lengths("8k, 64k") == [8192, 65536]
    assert [length_label(n) for n in (8192, 1024 * 1024, 5000)] == ["8k", "1m", "5000"]
    for bad in ("", "8x", "0", "-4k"):
        with pytest.raises(ConfigurationError):
            parse_length(bad)


def test_builtin_suites_cycle_their_variants() -> None:
    tasks = builtin_tasks("niah", [4096, 8192], 4)
    assert [t.id for t in tasks][:5] == [
        "niah-4k-0000",
        "niah-4k-0001",
        "niah-4k-0002",
        "niah-4k-0003",
        "niah-8k-0000",
    ]
    assert [t.params["needles"] for t in tasks[:4]] == [1, 1, 3, 1]
    everything = load_suite("builtin:all", n=2, lengths=[4096])
    assert Counter(t.family for t in everything.tasks) == {
        "niah": 2,
        "oolong": 2,
        "oolong_pairs": 2,
        "codeqa": 2,
    }
    assert load_suite("oolong", n=3, seed=5).tasks == load_suite("oolong", n=3, seed=5).tasks
    assert load_suite("oolong", n=3, seed=5).tasks != load_suite("oolong", n=3, seed=6).tasks


def test_unknown_suite_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no suite file 'nope'.*built-in: codeqa"):
        load_suite("nope")
    with pytest.raises(ConfigurationError, match="unknown built-in suite 'nope'"):
        load_suite("builtin:nope")


def test_written_suite_reads_back_and_runs_the_same(tmp_path: Path) -> None:
    suite = load_suite("all", n=1, lengths=[4096])
    path = tmp_path / "suite.jsonl"
    assert write_tasks(suite.tasks, path) == 4
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all({"question", "answer", "scorer", "context_sha256"} <= set(line) for line in lines)
    back = read_tasks(path)
    for original, read in zip(suite.tasks, back, strict=True):
        assert read.id == original.id
        assert read.prepare() == original.prepare()
    tampered = dict(lines[0], context_sha256="0" * 64)
    with pytest.raises(TaskError, match="different context"):
        Task(**{k: v for k, v in tampered.items()}).prepare()


def test_handwritten_suite_lines(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("The vault code is 7781.")
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "# my suite\n"
        + json.dumps(
            {"context": "Alice met Bob in Paris.", "question": "Where?", "answer": "Paris"}
        )
        + "\n\n"
        + json.dumps(
            {
                "id": "vault",
                "context_file": "doc.txt",
                "question": "Code?",
                "answer": 7781,
                "scorer": "numeric",
            }
        )
        + "\n"
    )
    first, second = read_tasks(path)
    assert first.id.startswith("task-") and first.scorer is None
    assert first.prepare().scorer == "exact"
    assert second.prepare().context == "The vault code is 7781."
    assert load_suite(str(path), n=1).tasks == [first]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"context": "c", "question": "q", "answr": "a"}', "unknown task field 'answr'.*'answer'"),
        ('{"question": "q", "answer": "a"}', "exactly one of context"),
        ('{"context": "c", "answer": "a"}', "needs 'question'"),
        ('{"generator": "niah", "seed": "x"}', "seed must be an integer"),
        ("not json", "not JSON"),
    ],
)
def test_bad_suite_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": "c", "question": "q", "answer": "a"}\n' + line + "\n")
    with pytest.raises(ConfigurationError, match=f"bad.jsonl:2: .*{message}"):
        read_tasks(path)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    line = json.dumps({"id": "a", "context": "c", "question": "q", "answer": "x"})
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(ConfigurationError, match="'a' appears twice"):
        read_tasks(path)
