"""Run one task under one configuration and score it: the unit of work of every engine.

``mode="rlm"`` runs ``RLM(...).completion(context, root_prompt=question)``. ``mode="plain"``
is the baseline without the REPL: the same backend called once with the whole context and
the question in its prompt (an RLM with ``max_depth=0``, so usage, budgets and the rate
limiter work the same way). Each run writes its trajectory through :class:`RLMLogger`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from rlm_core.eval.config import RunConfig
from rlm_core.eval.results import TaskResult
from rlm_core.eval.scorers import score
from rlm_core.eval.tasks import Prepared, Task
from rlm_core.exceptions import (
    BackendError,
    BudgetExceededError,
    LimitExceededError,
    MissingAPIKeyError,
    SandboxCrashedError,
    ScriptExhaustedError,
    TokenLimitExceededError,
)
from rlm_core.logger import RLMLogger
from rlm_core.types import RLMIteration, UsageSummary

PLAIN_PROMPT = "{context}\n\n---\nAnswer the question about the text above.\nQuestion: {question}"
"""The baseline's prompt: the whole context, then the question."""
PLAIN_MARKER = "\n\n---\nAnswer the question about the text above.\nQuestion: "


def plain_prompt(context: Any, question: str) -> str:
    """The baseline's one prompt."""
    text = context if isinstance(context, str) else _as_text(context)
    return PLAIN_PROMPT.format(context=text, question=question)


def _as_text(context: Any) -> str:
    return json.dumps(context, indent=1, default=str)


def is_retryable(exc: BaseException) -> bool:
    """Failures worth running the task again: an LM call that failed for good after the
    backend's own retries, or a crashed sandbox. A missing API key or a scripted LM out of
    replies is not one."""
    if isinstance(exc, MissingAPIKeyError | ScriptExhaustedError):
        return False
    return isinstance(exc, BackendError | SandboxCrashedError)


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:100] or "task"


@dataclass
class _Outcome:
    prediction: str | None = None
    usage: UsageSummary | None = None
    error: BaseException | None = None
    log_file: str | None = None


def _run(prepared: Prepared, config: RunConfig, logger: RLMLogger | None) -> _Outcome:
    from rlm_core.rlm import RLM

    outcome = _Outcome()
    rlm = RLM(**config.rlm_arguments(), logger=logger)
    try:
        if config.mode == "plain":
            prompt = plain_prompt(prepared.context, prepared.question)
            result = rlm.completion(prompt)
            if logger is not None:
                size = len(prompt) - len(plain_prompt("", prepared.question))
                shown = plain_prompt(f"<context: {size:,} characters>", prepared.question)
                logger.log(
                    RLMIteration(
                        prompt=[{"role": "user", "content": shown}],
                        response=result.response,
                        code_blocks=[],
                        final_answer=result.response,
                        iteration_time=result.execution_time,
                    )
                )
        else:
            result = rlm.completion(prepared.context, root_prompt=prepared.question)
        outcome.prediction, outcome.usage = result.response, result.usage_summary
    finally:
        rlm.close()
    return outcome


def run_task(task: Task, config: RunConfig, log_dir: str | None = None) -> TaskResult:
    """Run ``task`` under ``config`` and score it. Never raises for a failing task: the
    failure is in the result (``error_type``, ``error``, ``retryable``, score 0)."""
    try:
        prepared = task.prepare()
    except Exception as exc:
        return failed_result(task, config, exc, retryable=False)
    logger = None
    if log_dir is not None:
        logger = RLMLogger(
            log_dir=os.path.join(log_dir, _safe(config.name)), file_name=_safe(task.id)
        )
    start = time.perf_counter()
    outcome = _Outcome()
    try:
        outcome = _run(prepared, config, logger)
    except LimitExceededError as exc:
        outcome.prediction, outcome.error = exc.partial_answer, exc
    except Exception as exc:
        outcome.error = exc
    latency = time.perf_counter() - start
    try:
        value = score(prepared.scorer, outcome.prediction, prepared.answer)
    except Exception as exc:
        value = 0.0
        outcome.error = outcome.error or exc
    usage = outcome.usage or UsageSummary()
    result = TaskResult(
        config=config.name,
        task_id=task.id,
        family=task.family,
        context_length=prepared.context_length,
        score=value if outcome.error is None else 0.0,
        prediction=outcome.prediction,
        answer=prepared.answer,
        scorer=prepared.scorer,
        latency=latency,
        input_tokens=usage.total_input_tokens,
        output_tokens=usage.total_output_tokens,
        calls=usage.total_calls,
        cost=usage.total_cost,
        log_file=logger.log_file_path if logger is not None else None,
        worker=worker_name(),
        finished_at=time.time(),
    )
    if outcome.error is not None:
        _record_error(result, outcome.error)
    return result


def failed_result(
    task: Task, config: RunConfig, exc: BaseException, *, retryable: bool
) -> TaskResult:
    """The result of a task that could not run at all (its context could not be made, or
    the engine could not run it), scored 0."""
    return TaskResult(
        config=config.name,
        task_id=task.id,
        family=task.family,
        context_length=task.context_length or 0,
        score=0.0,
        prediction=None,
        answer=task.answer,
        scorer=task.scorer or "",
        latency=0.0,
        error_type=type(exc).__name__,
        error=" ".join(str(exc).split())[:2000],
        retryable=retryable,
        worker=worker_name(),
        finished_at=time.time(),
    )


def _record_error(result: TaskResult, exc: BaseException) -> None:
    result.error_type = type(exc).__name__
    result.error = " ".join(str(exc).split())[:2000]
    result.retryable = is_retryable(exc)
    if isinstance(exc, BudgetExceededError):
        result.cost = exc.spent
    if isinstance(exc, TokenLimitExceededError):
        result.input_tokens = result.input_tokens or exc.tokens_used
