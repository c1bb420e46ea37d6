"""The prompts the root LM sees: system prompt, context metadata and per-turn messages.

The wording matches the reference ``rlms`` package so that models behave the same.
"""

from __future__ import annotations

import textwrap

from rlm_core.environments.base import format_tools_for_prompt
from rlm_core.types import Messages, QueryMetadata

RLM_SYSTEM_PROMPT = textwrap.dedent(
    """You are a Recursive Language Model (RLM): a language model with a prompt, and a very important context stored in a Python REPL related to that prompt.
You can iteratively interact with the a Python REPL, which has access to LLM calls as a function. You will be queried turn-by-turn until you have an answer to the query.

To use the REPL, you need to write code in ```repl``` blocks; the REPL persists across turns. Available in the REPL:
- `context`: the important, potentially very long information related to the prompt (typically `str` or `list[str]`).
- `llm_query(prompt: str, model: str | None = None) -> str`: a single sub-LLM completion. Use for extraction, summarization, or Q&A over a chunk of text. Sub-LLM context window ≈ 500K chars.
- `llm_query_batched(prompts: list[str], model=None) -> list[str]`: concurrently call several LLM calls in parallel over a list of prompts; same order out as in.
- `rlm_query(prompt, model=None)` / `rlm_query_batched(prompts, model=None)`: recursive RLM sub-calls. Fall back to `llm_query` / `llm_query_batched` when recursion is disabled.
- `SHOW_VARS() -> str`: list every variable currently in the REPL.
- `answer`: dict initialized to `{{"content": "", "ready": False}}`. To submit, set `answer["content"]` to the final answer and `answer["ready"] = True` inside a ```repl``` block.
{custom_tools_section}

REPL outputs over ~20K characters are truncated, so for longer payloads slice `context` and pass slices through `llm_query` rather than `print`-ing them whole. The REPL is NOT a Jupyter cell — only `print(...)` output (stdout) is shown back to you between turns; a bare expression on the last line is silently discarded. Always wrap inspections in `print(...)`.

As a general strategy, you should start by probing your context to understand it better (e.g. print a few lines, count them, etc.). Then, use the REPL to build up an answer to the query.

Plan in prose, then execute one ```repl``` block every turn, get feedback from the output, then continue on the next turn. Do not flip `answer["ready"] = True` on turn 1 without first inspecting `context`.
"""
)


ORCHESTRATOR_ADDENDUM = "\n\n".join(
    [
        "As an RLM, you should act as an orchestrator, not a solver.",
        (
            "Directly after you probe the `context` and understand your task, pause and plan: "
            "state explicitly how the task decomposes into sub-LLM / REPL steps, and sketch "
            "the concrete sequence of turns — what each turn computes and which sub-LLM call "
            "(if any) it issues — like a condensed trajectory, before you execute them. "
            "Then execute one turn at a time: after each step `print` a small sample of the "
            'result, verify it looks right, and only flip `answer["ready"] = True` once you '
            "have actually printed the candidate answer. If you are running out of turns "
            "without a confirmed answer, submit your best inference rather than letting the "
            "rollout terminate unsubmitted."
        ),
        (
            "Your own context window is small. Push every long-context operation that would "
            "not fit comfortably in your own working window — reading, summarizing, "
            "classifying, verifying, answering sub-questions, even recapping your own "
            "progress — into `llm_query` / `llm_query_batched` calls instead of pulling that "
            "text into your own message stream. (Conversely: if a Python keyword / regex "
            "search over `context` would already pin the answer, or if a single visible "
            "passage already contains it, just read it directly — sub-LMs are for when the "
            "raw text won't fit or the question needs semantic interpretation.) Long REPL "
            "stdout pollutes history the same way raw `context` does: if you want a recap, "
            "ask `llm_query` for a 1–2 sentence summary and `print` only that. Aggregate "
            "the small results back in the REPL."
        ),
        (
            "Sub-LLMs have no REPL; they only see the prompt and the `context` slice you pass "
            "them. Hand them clean, focused inputs and ask for terse, structured outputs you "
            "can manipulate programmatically."
        ),
        (
            "Sub-call budget is finite on two independent axes, and `llm_query_batched` only "
            "parallelizes — it does not relax either. (1) Per-prompt capacity: a single "
            "sub-call answers well only when its input stays modestly sized — a useful rough "
            "ceiling is ~100K characters per prompt, less when the text is dense. Pack each "
            "prompt close to that capacity (a chunk of many items, a whole document) so one "
            "call accomplishes a lot of work. (2) Per-batch fan-out: `llm_query_batched` "
            "concurrency is bounded too — a useful rough ceiling is ~20 prompts per batch. "
            "Tiny-prompt mega-batches (hundreds or thousands of single-item prompts) are the "
            "anti-pattern; fat-prompt small batches are correct. For many independent units, "
            "use several ~20-wide batches of full-capacity prompts in sequence, not one "
            "mega-batch of tiny prompts. When the work can be expressed either as a "
            "sequential loop of `llm_query`s or as one comparably-sized batched call, "
            "prefer batched — same total work, far fewer turns burned. After Python-side "
            "filtering has narrowed the candidate set, batch-extract the survivors rather "
            "than reading them by hand. If the raw workload exceeds both budgets at once "
            "(e.g. a context far larger than ~20 × 100K chars), don't brute-force it: "
            "filter aggressively in Python first to a tractable subset, or stage the task — "
            "a cheap coarse pass narrows candidates, then a targeted second pass extracts "
            "from the survivors."
        ),
        (
            "Reserve your own tokens for high-level decisions: what to ask next, how to combine "
            "sub-LM outputs, when to finalize. Delegate everything else."
        ),
    ]
)


DEFAULT_MAX_ITERATIONS = 30

USER_PROMPT = "Turn {iter_1}/{max_iter}:"

NO_CODE_NUDGE = (
    "Your last reply had no ```repl``` block, so nothing ran and no answer was submitted. "
    'Write Python in a ```repl``` block; to finish, set answer["content"] and '
    'answer["ready"] = True inside one.'
)

COMPACTION_NOTE = (
    "\n\nThe full conversation history (trajectory segments and any summaries) "
    "is available in the REPL variable `history` as a list."
)

COMPACTION_REQUEST = (
    "Summarize your progress so far. Include:\n"
    "1. Which steps/sub-tasks you have completed and which remain.\n"
    "2. Any concrete intermediate results (numbers, values, variable names) "
    "you computed \u2014 preserve these exactly.\n"
    "3. What your next action should be.\n"
    "Be concise (1\u20133 paragraphs) but preserve all key results and your "
    "current position in the task."
)

FINAL_ANSWER_REQUEST = (
    "You have run out of turns. Please provide a final answer to the user's question "
    "based on the information provided."
)


def compaction_resume(compaction_count: int) -> str:
    """The message that follows a summary after the history was compacted."""
    return (
        f"Your conversation has been compacted {compaction_count} time(s). "
        "Continue from the above summary. Do NOT repeat work you have already "
        "completed. Use SHOW_VARS() to check which REPL variables exist, "
        "and check `history` for full context. "
        "Your next action:"
    )


def build_rlm_system_prompt(
    system_prompt: str,
    query_metadata: QueryMetadata,
    custom_tools: dict[str, object] | None = None,
    root_prompt: str | None = None,
    orchestrator: bool = True,
) -> Messages:
    """The first two messages of every run: the system prompt and the context metadata."""
    tools_formatted = format_tools_for_prompt(custom_tools)
    section = (
        f"\n6. Custom tools and data available in the REPL:\n{tools_formatted}"
        if (tools_formatted)
        else ""
    )
    final = system_prompt.replace("{custom_tools_section}", section)
    final = final.replace("{{", "{").replace("}}", "}")
    if orchestrator:
        final = f"{final}\n\n{ORCHESTRATOR_ADDENDUM}"
    body = (
        f"Your context is a {query_metadata.context_type} of "
        f"{query_metadata.context_total_length} total characters. "
        "Each sub-LLM call can handle roughly ~100k tokens at once."
    )
    metadata_prompt = f"Answer the following: {root_prompt}\n\n{body}" if root_prompt else body
    return [
        {"role": "system", "content": final},
        {"role": "user", "content": metadata_prompt},
    ]


def build_user_prompt(
    root_prompt: str | None = None,
    iteration: int = 0,
    context_count: int = 1,
    history_count: int = 0,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    history_is_trajectory: bool = False,
) -> dict[str, str]:
    """The per-turn user message (``"Turn 3/30:"`` plus notes on contexts and histories).

    With ``history_is_trajectory`` (compaction on), ``history`` holds the current run's
    trajectory, so past conversations are named by their numbered variables only.
    """
    prompt = USER_PROMPT.format(iter_1=iteration + 1, max_iter=max_iterations)
    if iteration == 0:
        prompt = (
            "You have not interacted with the REPL environment or seen your prompt / context "
            "yet. Look at the context first; do not provide a final answer yet.\n\n" + prompt
        )
    if context_count > 1:
        prompt += (
            f"\n\nNote: You have {context_count} contexts available "
            f"(context_0 through context_{context_count - 1})."
        )
    if history_count == 1 and history_is_trajectory:
        prompt += "\n\nNote: You have 1 prior conversation history available in `history_0`."
    elif history_count == 1:
        prompt += (
            "\n\nNote: You have 1 prior conversation history available in the `history` variable."
        )
    elif history_count > 1:
        prompt += (
            f"\n\nNote: You have {history_count} prior conversation histories available "
            f"(history_0 through history_{history_count - 1})."
        )
    return {"role": "user", "content": prompt}
