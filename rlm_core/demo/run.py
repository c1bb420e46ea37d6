"""Run the lighthouse demo: an RLM answers a question about a 460 KB document.

With ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set, a real model (``gpt-4o-mini`` unless
``RLM_DEMO_MODEL`` or ``model`` says otherwise) drives the RLM. Without them, a scripted
stand-in LM plays both the root model and the sub-LMs: its root replies are fixed Python
cells that really run in the REPL, and its sub-LM replies come from parsing the chunk of
text each sub-call was given. The answer is therefore really computed through the REPL
and the sub-calls, deterministically, with no network access.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any, TextIO

from rlm_core.demo import DOCUMENT_NAME, QUESTION
from rlm_core.demo.make_document import expected_answer
from rlm_core.logger import RLMLogger
from rlm_core.types import RLMChatCompletion

DEFAULT_MODEL = "gpt-4o-mini"
"""Model used with a real backend when neither ``model`` nor ``RLM_DEMO_MODEL`` is given."""

SCRIPTED_NOTICE = (
    "No OPENAI_API_KEY set: a scripted stand-in LM plays the model "
    "(deterministic, not a real model)."
)

# -- the scripted stand-in LM -----------------------------------------------------------

_TURN_1 = """\
The context is too long to read at once. Let me first see what it looks like.

```repl
lines = context.splitlines()
print(f"type={type(context).__name__} chars={len(context):,} lines={len(lines):,}")
for line in lines[:10]:
    print("  |", line)
headers = [line for line in lines if line.startswith("==== LOGBOOK: ")]
print(f"logbook sections: {len(headers)}")
print("first headers:", headers[:3])
```"""

_TURN_2 = """\
The document is a series of logbooks, one per station and year, and a station's logbooks
are spread over the file. Storm headings vary, so I will not rely on a single grep. I will
pack whole logbooks into chunks of about 60,000 characters, ask a sub-LM to count the
storms per station in each chunk, and add the counts up.

```repl
import re
from collections import Counter

sections = [
    s for s in re.split(r"(?m)^(?===== LOGBOOK: )", context) if s.startswith("==== LOGBOOK: ")
]
chunks, current = [], ""
for section in sections:
    if current and len(current) + len(section) > 60_000:
        chunks.append(current)
        current = ""
    current += section
if current:
    chunks.append(current)

instructions = (
    "Count the storms in these lighthouse logbooks. A storm is an entry logged under a "
    "STORM, GALE or TEMPEST heading, in any capitalisation; other mentions of storms "
    "(storm shutters, storm lanterns, storm drills, ship names) do not count. Reply with one "
    "line per station, 'Station name: count', and nothing else.\\n\\n"
)
replies = llm_query_batched([instructions + chunk for chunk in chunks])

totals = Counter()
for reply in replies:
    for name, count in re.findall(r"(?m)^\\s*(.+?):\\s*(\\d+)\\s*$", reply):
        totals[name.strip()] += int(count)
print(f"{len(sections)} logbooks in {len(chunks)} chunks")
print(f"storm counts from {len(replies)} sub-LM replies:")
for name, count in totals.most_common():
    print(f"  {name}: {count}")
```"""

_TURN_3 = """\
I have per-station totals over every chunk. The answer is the station with the largest total.

```repl
ranking = totals.most_common()
station, storms = ranking[0]
print(f"winner: {station} with {storms} storms; next: {ranking[1][0]} with {ranking[1][1]}")
answer["content"] = f"{station} recorded the most storms: {storms}."
answer["ready"] = True
```"""

_PROBED = re.compile(r"logbook sections: \d+")
_COUNTED = re.compile(r"storm counts from \d+ sub-LM replies")
_HEADER = re.compile(r"^==== LOGBOOK: (.+?) -- \d{4} ====\s*$")
_STORM_ENTRY = re.compile(r"^\s+\d{4}-\d{2}-\d{2}\s+(STORM|GALE|TEMPEST)\s*:", re.IGNORECASE)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def scripted_root_reply(messages: Sequence[dict[str, Any]]) -> str:
    """The stand-in root model: choose the next cell from what the REPL has printed so far.

    The markers it looks for only appear in REPL output (the code prints them from
    f-strings), so the choice follows what actually ran.
    """
    seen = "\n".join(_content(m) for m in messages if m.get("role") == "user")
    if _COUNTED.search(seen):
        return _TURN_3
    if _PROBED.search(seen):
        return _TURN_2
    return _TURN_1


def scripted_sub_reply(prompt: str) -> str:
    """The stand-in sub-LM: count storm entries per station in the logbook text it was given."""
    counts: Counter[str] = Counter()
    station: str | None = None
    for line in prompt.splitlines():
        header = _HEADER.match(line)
        if header:
            station = header.group(1)
            counts[station] += 0
        elif station is not None and _STORM_ENTRY.match(line):
            counts[station] += 1
    if not counts:
        return "I found no logbook entries in this text."
    return "\n".join(f"{name}: {count}" for name, count in counts.items())


def scripted_lm(messages: list[dict[str, Any]]) -> str:
    """Reply as the root model (history starts with a system message) or as a sub-LM."""
    if messages and messages[0].get("role") == "system":
        return scripted_root_reply(messages)
    return scripted_sub_reply(_content(messages[-1]) if messages else "")


# -- running ----------------------------------------------------------------------------


def load_document() -> str:
    """The bundled ``lighthouse_logs.txt``."""
    return resources.files("rlm_core.demo").joinpath(DOCUMENT_NAME).read_text(encoding="utf-8")


def choose_backend(backend: str | None) -> str:
    """``backend``, or for ``None``: ``"openai"`` if an OpenAI key or base URL is set, else
    ``"scripted"``."""
    if backend is not None:
        return backend
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    return "scripted"


def _indent(text: str, max_lines: int, prefix: str = "    ") -> str:
    lines = text.rstrip("\n").splitlines() or ["(nothing)"]
    shown = lines[:max_lines]
    if len(lines) > max_lines:
        shown.append(f"... ({len(lines) - max_lines} more lines)")
    return "\n".join(prefix + line for line in shown)


def _short(text: str, limit: int = 160) -> str:
    flat = " | ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _print_trajectory(result: RLMChatCompletion, out: TextIO) -> int | None:
    """Print each iteration's cells and output; return the sub-LM calls the trajectory shows."""
    metadata = result.metadata if isinstance(result.metadata, dict) else {}
    iterations = metadata.get("iterations")
    if not isinstance(iterations, list) or not iterations:
        print("(this run recorded no trajectory, so iterations cannot be shown)", file=out)
        return None
    sub_calls = 0
    for number, iteration in enumerate(iterations, start=1):
        blocks = iteration.get("code_blocks") or [] if isinstance(iteration, dict) else []
        print(f"\n--- iteration {number}: {len(blocks)} cell(s) ---", file=out)
        if not blocks and isinstance(iteration, dict):
            print("  reply (no code):", file=out)
            print(_indent(str(iteration.get("response", "")), 6), file=out)
        for block in blocks:
            res = block.get("result") or {}
            calls = res.get("rlm_calls") or []
            sub_calls += len(calls)
            print("  code:", file=out)
            print(_indent(str(block.get("code", "")), 40), file=out)
            print("  output:", file=out)
            print(_indent(str(res.get("stdout", "")), 10), file=out)
            if res.get("error"):
                print(f"  error: {res['error']}", file=out)
            if calls:
                first = calls[0] if isinstance(calls[0], dict) else {}
                print(f"  sub-LM calls in this cell: {len(calls)}; the first one:", file=out)
                prompt = str(first.get("prompt", ""))
                print(f"    prompt:   ({len(prompt):,} chars) {_short(prompt)}", file=out)
                print(f"    response: {_short(str(first.get('response', '')))}", file=out)
    return sub_calls


def _print_usage(result: RLMChatCompletion, out: TextIO, scripted: bool) -> None:
    usage = result.usage_summary
    for model, summary in usage.model_usage_summaries.items():
        print(
            f"  {model}: {summary.total_calls} calls, {summary.total_input_tokens:,} input "
            f"tokens, {summary.total_output_tokens:,} output tokens",
            file=out,
        )
    total = (
        f"  total: {usage.total_calls} LM calls, {usage.total_input_tokens:,} input + "
        f"{usage.total_output_tokens:,} output tokens"
    )
    if usage.total_cost is not None:
        total += f", ${usage.total_cost:.4f}"
    print(total, file=out)
    if scripted:
        print("  (the stand-in LM counts one token per four characters)", file=out)


def run_demo(
    out: TextIO = sys.stdout,
    backend: str | None = None,
    model: str | None = None,
    environment: str = "local",
) -> RLMChatCompletion:
    """Answer :data:`rlm_core.demo.QUESTION` about the bundled document and narrate the run.

    ``backend=None`` picks ``"openai"`` when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is
    set and the scripted stand-in LM otherwise. ``model`` defaults to ``RLM_DEMO_MODEL`` or
    ``gpt-4o-mini`` (real backends only). Errors of the RLM (for example a missing API key
    or an unknown environment) propagate as :class:`rlm_core.exceptions.RLMError`.
    """
    from rlm_core.rlm import RLM

    chosen = choose_backend(backend)
    scripted = chosen == "scripted"
    document = load_document()
    truth = expected_answer()

    backend_kwargs: dict[str, Any]
    if scripted:
        if backend is None:
            print(SCRIPTED_NOTICE, file=out)
        else:
            print(
                "Backend 'scripted': a scripted stand-in LM plays the model "
                "(deterministic, not a real model).",
                file=out,
            )
        print(
            "  Its root replies are fixed Python cells that really run in the REPL; its sub-LM\n"
            "  replies come from parsing the text each sub-call sends. Set OPENAI_API_KEY to\n"
            "  run the same demo with a real model.",
            file=out,
        )
        backend_kwargs = {"responses": scripted_lm, "model_name": "scripted"}
        max_iterations = 6
    else:
        model_name = model or os.environ.get("RLM_DEMO_MODEL") or DEFAULT_MODEL
        backend_kwargs = {"model_name": model_name}
        base_url = os.environ.get("OPENAI_BASE_URL")
        if base_url and chosen == "openai":
            backend_kwargs["base_url"] = base_url
        where = f" at {base_url}" if base_url and chosen == "openai" else ""
        print(f"Using backend {chosen!r} with the real model {model_name}{where}.", file=out)
        print(
            "  Every root turn and sub-call is a real API call (billed by hosted providers);\n"
            "  the model writes its own code, so runs differ.",
            file=out,
        )
        max_iterations = 20

    headers = sum(1 for line in document.splitlines() if line.startswith("==== LOGBOOK: "))
    print("\n" + textwrap.fill(f"Question: {QUESTION}", width=88), file=out)
    print(
        f"Context: {DOCUMENT_NAME}, {len(document):,} characters, {headers} logbooks. "
        "It is loaded as\n  the REPL variable `context`; the root LM sees only its size and "
        "what its own code prints.",
        file=out,
    )

    def progress(depth: int, number: int, seconds: float) -> None:
        if depth == 0:
            print(f"  ... iteration {number} finished in {seconds:.1f}s", file=out, flush=True)

    rlm = RLM(
        backend=chosen,
        backend_kwargs=backend_kwargs,
        environment=environment,
        max_depth=1,
        max_iterations=max_iterations,
        logger=RLMLogger(),
        verbose=False,
        on_iteration_complete=None if scripted else progress,
    )
    if not scripted:
        print("\nRunning...", file=out, flush=True)
    try:
        result = rlm.completion(document, root_prompt=QUESTION)
    finally:
        close = getattr(rlm, "close", None)
        if callable(close):
            close()

    sub_calls = _print_trajectory(result, out)
    print("\n=== result ===", file=out)
    if sub_calls is not None:
        print(f"Sub-LM calls (llm_query / llm_query_batched): {sub_calls}", file=out)
    else:
        print(
            f"LM calls in total (root and sub-LM): {result.usage_summary.total_calls}",
            file=out,
        )
    print(f"Final answer:    {result.response}", file=out)
    if scripted:
        verdict = "matches" if result.response.strip() == truth else "DOES NOT match"
        print(f"Expected answer: {truth}  ({verdict}; computed by the generator)", file=out)
    else:
        print(f"Expected answer: {truth}  (computed by the generator, for comparison)", file=out)
    print(f"Time: {result.execution_time:.2f}s", file=out)
    print("Usage:", file=out)
    _print_usage(result, out, scripted)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlm_core.demo.run``: run the demo (same as ``rlm demo``)."""
    from rlm_core.cli import main as cli_main

    return cli_main(["demo", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
