"""A scripted stand-in LM that solves the bundled suites (a test double, not a model).

Use it as the replies of the ``scripted`` backend (``rlm eval niah --backend scripted``, or a
configuration with ``backend = "scripted"``). It plays three parts:

* **root model**: it recognises the bundled question templates and writes a cell that
  really solves the task over ``context``: a regular expression and a sub-LM read for
  needles, sub-LM labelling of record batches then counting for OOLONG and pairs, the
  context split into modules and a sub-LM outline of each for code questions. It looks at
  the context first, like a model.
* **sub-LM**: it reads what a sub-call sends: it extracts a magic number from a sentence,
  labels record instances from the wording of each question, and outlines a module's
  source (with :func:`rlm_core.eval.generators.codeqa.outline`, which parses one thread at
  a time: several RLMs' cells may run in one interpreter).
* **plain model** (the ``mode = "plain"`` baseline): it reads only the first
  :data:`PLAIN_WINDOW_TOKENS` tokens of the prompt, as a model with that context window
  would, and answers by running the same solving code over what it read. Its scores
  therefore fall once contexts outgrow that window, while the RLM's do not.

A question it does not recognise gets the answer ``"unknown"``.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping
from typing import Any

from rlm_core.eval.execute import PLAIN_MARKER
from rlm_core.eval.generators import codeqa, niah, oolong, pairs
from rlm_core.eval.generators.records import LABEL_GUIDE, LABELS
from rlm_core.tokens import CHARS_PER_TOKEN

PLAIN_WINDOW_TOKENS = 16_384
"""How much of a plain prompt the stand-in reads."""

EXTRACT = "Read the sentence below and reply with the special magic number for"
LABEL = (
    "Label each numbered question below with its category: abbreviation, entity, "
    "description, human, location or numeric. Reply with one line per question, "
    "'number: label', and nothing else."
)
OUTLINE = (
    "Outline this Python module: reply with a JSON object listing its top-level "
    "'functions' and 'classes' (def, async def and class statements directly in the module "
    "body) and the modules it 'imports' (absolute imports anywhere, top-level names)."
)
UNKNOWN = "unknown"

LABEL_RULES: tuple[tuple[str, str], ...] = (
    ("What does ", "abbreviation"),
    ("What is the full form of ", "abbreviation"),
    ("What kind of ", "entity"),
    ("Which instrument ", "entity"),
    ("What colour ", "entity"),
    ("Why ", "description"),
    ("How does ", "description"),
    ("What is the meaning ", "description"),
    ("Who ", "human"),
    ("Which person ", "human"),
    ("Where ", "location"),
    ("In which country ", "location"),
    ("How many ", "numeric"),
    ("When ", "numeric"),
    ("How much ", "numeric"),
)
"""How the stand-in sub-LM reads an instance's category from its opening words."""


def label_of(text: str) -> str:
    """The stand-in sub-LM's category of one record instance."""
    for opening, label in LABEL_RULES:
        if text.startswith(opening):
            return label
    return UNKNOWN


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching ``template`` with its ``{fields}`` captured (a field holds no
    quote, backtick or line break)."""
    pattern, seen = "", set()
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        pattern += re.escape(literal)
        if name:
            pattern += f"(?P={name})" if name in seen else f"(?P<{name}>[^'`\\n]+?)"
            seen.add(name)
    return re.compile(pattern + r"\Z", re.S)


def _templates() -> list[tuple[str, str, re.Pattern[str]]]:
    found = [
        ("niah", "single", template_regex(niah.SINGLE_QUESTION)),
        ("niah", "multi", template_regex(niah.MULTI_QUESTION)),
    ]
    for kind, text in oolong.QUESTIONS.items():
        found.append(("oolong", kind, template_regex(f"{LABEL_GUIDE} {text}")))
    for kind, text in pairs.QUESTIONS.items():
        found.append(("pairs", kind, template_regex(f"{LABEL_GUIDE} {text}{pairs.ANSWER_FORMAT}")))
    for kind, text in codeqa.QUESTIONS.items():
        found.append(("codeqa", kind, template_regex(f"{codeqa.GUIDE} {text}")))
    return found


_TEMPLATES = _templates()


def recognise(question: str) -> tuple[str, str, dict[str, str]] | None:
    """``(family, kind, fields)`` of a bundled question, or ``None``."""
    for family, kind, regex in _TEMPLATES:
        match = regex.match(question.strip())
        if match:
            return family, kind, match.groupdict()
    return None


# -- solving cells -------------------------------------------------------------------------


def _cell(code: str, **values: Any) -> str:
    body = textwrap.dedent(code)
    for name, value in values.items():
        body = body.replace(f"@{name}@", repr(value))
    return body


_FINISH = """
answer["content"] = str(result)
answer["ready"] = True
"""

_NIAH = """
import re
key = @key@
hits = []
for found in re.finditer(r"(?<![\\w-])" + re.escape(key) + r"(?![\\w-])", context):
    start = max(context.rfind(".", 0, found.start()), context.rfind("\\n", 0, found.start()))
    hits.append(context[start + 1 : context.find(".", found.end()) + 1].strip())
print(f"{len(hits)} sentence(s) mention {key}")
replies = llm_query_batched([@extract@ + " " + key + ":\\n" + hit for hit in hits])
numbers = sorted({r.strip() for r in replies if r.strip().isdigit()})
print("numbers:", numbers)
result = ", ".join(numbers) if @multi@ else (numbers[0] if numbers else "not found")
"""

_LABELLED = """
import re
from collections import Counter
rows = re.findall(r"(?m)^Date: (.+?) \\|\\| User: (\\d+) \\|\\| Instance: (.*)$", context)
chunks = [rows[i:i + 150] for i in range(0, len(rows), 150)]
prompts = [
    @label@ + "\\n" + "\\n".join(f"{j}: {text}" for j, (_, _, text) in enumerate(chunk))
    for chunk in chunks
]
replies = llm_query_batched(prompts)
labels = []
for chunk, reply in zip(chunks, replies):
    got = dict(re.findall(r"(?m)^(\\d+):\\s*([a-z]+)\\s*$", reply))
    labels += [got.get(str(j), "unknown") for j in range(len(chunk))]
counts = Counter(label for label in labels if label in @labels@)
print(f"{len(rows)} records in {len(chunks)} chunks; label counts: {dict(counts)}")
"""

_OOLONG = {
    "count": "result = counts[@label@]",
    "most_common": "result = max(@labels@, key=lambda name: counts[name])",
    "least_common": "result = min(@labels@, key=lambda name: counts[name])",
    "compare": """
a, b = counts[@label@], counts[@other@]
result = "more common" if a > b else "less common" if a < b else "same frequency"
""",
    "user_count": """
result = sum(
    1 for (_, user, _), label in zip(rows, labels) if user == @user@ and label == @label@
)
""",
}

_PAIRS = """
labels_of = {}
for (_, user, _), label in zip(rows, labels):
    labels_of.setdefault(int(user), set()).add(label)
a, b = @a@, @b@
ok = sorted(u for u, found in labels_of.items() if @condition@)
print(f"{len(ok)} users qualify")
result = "\\n".join(f"{x}, {y}" for i, x in enumerate(ok) for y in ok[i + 1:])
"""

_PAIR_CONDITIONS = {
    "one_label": "a in found",
    "either_label": "a in found or b in found",
    "both_labels": "a in found and b in found",
}

_CODE = """
import json, re
parts = re.split(r"(?m)^# ==== module (\\S+) \\(file (\\S+)\\) ====\\n?", context)
modules = {parts[i]: parts[i + 2] for i in range(1, len(parts) - 2, 3)}
replies = llm_query_batched([@outline@ + "\\n\\n" + source for source in modules.values()])
outlines = {}
for module, reply in zip(modules, replies):
    try:
        outlines[module] = json.loads(reply)
    except ValueError:
        print(f"no outline of {module}: {reply[:80]}")
print(f"{len(outlines)} of {len(modules)} modules outlined")
name = @name@
"""

_CODE_KINDS = {
    "function_module": """
owners = [m for m, o in outlines.items() if name in o["functions"]]
result = owners[0] if owners else "not found"
""",
    "class_module": """
owners = [m for m, o in outlines.items() if name in o["classes"]]
result = owners[0] if owners else "not found"
""",
    "count_functions": """
result = len(outlines[name]["functions"]) if name in outlines else "not found"
""",
    "count_classes": """
result = len(outlines[name]["classes"]) if name in outlines else "not found"
""",
    "count_importers": """
result = sum(name in o["imports"] for o in outlines.values())
""",
}


def solving_cell(family: str, kind: str, fields: Mapping[str, str]) -> str:
    """The cell that answers a recognised question from ``context``."""
    if family == "niah":
        code = _cell(_NIAH, key=fields["key"], extract=EXTRACT, multi=kind == "multi")
    elif family == "oolong":
        values = {k: v for k, v in fields.items()}
        code = _cell(_LABELLED, label=LABEL, labels=list(LABELS))
        code += _cell(_OOLONG[kind], labels=list(LABELS), **values)
    elif family == "pairs":
        code = _cell(_LABELLED, label=LABEL, labels=list(LABELS))
        code += _cell(
            _PAIRS.replace("@condition@", _PAIR_CONDITIONS[kind]),
            a=fields["a"],
            b=fields.get("b", ""),
        )
    else:
        code = _cell(_CODE, name=fields["name"], outline=OUTLINE) + _CODE_KINDS[kind]
    return code + _FINISH


_LOOK = """\
print(type(context).__name__, len(context))
print(context[:300])
"""

_GIVE_UP = """\
answer["content"] = str(globals().get("result", "unknown"))
answer["ready"] = True
"""


def repl(code: str) -> str:
    """A reply holding one ```repl block."""
    return f"```repl\n{code.strip()}\n```"


# -- the three parts -----------------------------------------------------------------------


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else str(content or "")


def root_reply(messages: list[dict[str, Any]]) -> str:
    """The stand-in root model: look at the context, then solve (or give up)."""
    first = _content(messages[1]) if len(messages) > 1 else ""
    match = re.match(r"Answer the following: (.*?)\n\nYour context is", first, re.S)
    recognised = recognise(match.group(1)) if match else None
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    if recognised is None:
        return repl(f'answer["content"] = {UNKNOWN!r}\nanswer["ready"] = True')
    if turn == 0:
        return "Let me look at the context first.\n" + repl(_LOOK)
    if turn == 1:
        return "Now I solve it with code.\n" + repl(solving_cell(*recognised))
    return repl(_GIVE_UP)


def _extract(prompt: str) -> str:
    head, _, text = prompt.partition(":\n")
    key = head[len(EXTRACT) :].strip()
    found = re.search(rf"The special magic number for {re.escape(key)} is (\d+)", text)
    return found.group(1) if found else "none"


def _outline(prompt: str) -> str:
    found = codeqa.outline(prompt[len(OUTLINE) :].lstrip("\n"))
    return "This is not valid Python." if found is None else json.dumps(found)


def _label_lines(prompt: str) -> str:
    lines = []
    for line in prompt.splitlines()[1:]:
        number, sep, text = line.partition(": ")
        if sep and number.isdigit():
            lines.append(f"{number}: {label_of(text)}")
    return "\n".join(lines)


def plain_answer(prompt: str) -> str:
    """The stand-in plain model: solve from the first :data:`PLAIN_WINDOW_TOKENS` tokens."""
    text, _, question = prompt.rpartition(PLAIN_MARKER)
    recognised = recognise(question)
    if recognised is None:
        return UNKNOWN
    answer: dict[str, Any] = {"content": "", "ready": False}
    namespace: dict[str, Any] = {
        "context": text[: PLAIN_WINDOW_TOKENS * CHARS_PER_TOKEN],
        "llm_query": sub_reply,
        "llm_query_batched": lambda prompts: [sub_reply(p) for p in prompts],
        "answer": answer,
        "print": lambda *args, **kwargs: None,
    }
    try:
        exec(solving_cell(*recognised), namespace)
    except Exception:
        return UNKNOWN
    return str(answer["content"]) or UNKNOWN


def sub_reply(prompt: str) -> str:
    """The stand-in sub-LM (and plain model)."""
    if prompt.startswith(EXTRACT):
        return _extract(prompt)
    if prompt.startswith(LABEL):
        return _label_lines(prompt)
    if prompt.startswith(OUTLINE):
        return _outline(prompt)
    if PLAIN_MARKER in prompt:
        return plain_answer(prompt)
    return "I cannot tell from this text."


def solver(messages: list[dict[str, Any]]) -> str:
    """The ``responses`` function of the ``scripted`` backend."""
    if messages and messages[0].get("role") == "system":
        return root_reply(messages)
    return sub_reply(_content(messages[-1]) if messages else "")
