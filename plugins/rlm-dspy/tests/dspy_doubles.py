"""Test doubles for the rlm-dspy tests: scripted LMs (no network) and process inspection."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import dspy
from dspy import lm15
from dspy.utils.dummies import DummyLM
from rlm_dspy import RLMCoreInterpreter

ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "local": {},
    "subprocess": {},
    "loopback-stdio": {"carrier": "stdio"},
}
"""The environments every protocol test runs on, by test id, with their settings."""

AGENT_ENVIRONMENTS = ("subprocess", "loopback-stdio")
"""The environments whose code runs in another process (they can crash and time out)."""


MakeInterpreter = Callable[..., RLMCoreInterpreter]
"""The ``make_interpreter`` fixture's type (see ``dspy_fixtures``)."""


def environment_name(test_id: str) -> str:
    """The rlm-core environment name behind a test id of :data:`ENVIRONMENTS`."""
    return test_id.split("-")[0]


class ScriptedSubEngine:
    """A scripted sub-LM (an lm15 engine): a plain prompt is answered upper-cased; a prompt
    built by a DSPy adapter for an ``answer`` field gets ``answer``, and a nested
    ``dspy.RLM``'s action prompt gets code that submits ``answer``. It records every prompt
    with the process and thread that served it."""

    def __init__(self, answer: str = "because") -> None:
        self.answer = answer
        self.calls: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        text = request.messages[-1].text
        with self._lock:
            self.calls.append((text, os.getpid(), threading.current_thread().name))
        prompt = "\n".join(str(message.text) for message in request.messages)
        if "[[ ## code ## ]]" in prompt:  # a nested dspy.RLM's action: submit at once
            reply = (
                "[[ ## reasoning ## ]]\nnested\n\n[[ ## code ## ]]\n"
                f"SUBMIT(answer={self.answer!r})\n\n[[ ## completed ## ]]"
            )
        elif "[[ ## answer ## ]]" in prompt:
            reply = f"[[ ## answer ## ]]\n{self.answer}\n\n[[ ## completed ## ]]"
        else:
            reply = text.upper()
        return lm15.Response(
            id="scripted",
            model="scripted",
            message=lm15.Message.assistant(lm15.TextPart(reply)),
            finish_reason="stop",
            usage=lm15.Usage(),
        )


def scripted_sub_lm(answer: str = "because") -> tuple[dspy.LM, ScriptedSubEngine]:
    """A sub-LM over :class:`ScriptedSubEngine` (uncached) and its engine."""
    engine = ScriptedSubEngine(answer)
    return dspy.LM("scripted/sub", engine=engine, cache=False), engine


def scripted_root_lm(steps: Iterable[tuple[str, str]]) -> DummyLM:
    """The root LM of ``dspy.RLM``: one ``(reasoning, code)`` step per action call."""
    return DummyLM([{"reasoning": reasoning, "code": code} for reasoning, code in steps])


# -- processes and directories ----------------------------------------------------------


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces (``""`` if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def agent_descendants(root: int | None = None) -> dict[int, str]:
    """Descendants of ``root`` (default: this process) whose command line mentions
    ``rlm_core.agent``, with their command lines (zombies have none and do not count)."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, str] = {}
    stack = list(children.get(os.getpid() if root is None else root, []))
    while stack:
        pid = stack.pop()
        line = cmdline(pid)
        if "rlm_core.agent" in line:
            found[pid] = line
        stack.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
