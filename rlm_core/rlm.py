"""The RLM loop: prompts, cells, sub-calls, budgets and answer detection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any, TypeVar

from rlm_core import interrupts
from rlm_core.backends.base import Backend, to_messages
from rlm_core.environments.base import PERSISTENT, TIMEOUT, Environment, Session, parse_tools
from rlm_core.environments.settings import (
    CAPABILITY_NOTES,
    Setting,
    check_environment_settings,
    describe_type,
    matches_type,
)
from rlm_core.exceptions import (
    BudgetExceededError,
    CancellationError,
    CellRejectedError,
    ConfigurationError,
    ErrorThresholdExceededError,
    LimitExceededError,
    RLMWarning,
    SandboxRestartedError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm_core.logger import RLMLogger, usage_delta
from rlm_core.parsing import find_code_blocks, format_iteration
from rlm_core.plugins import get_registry
from rlm_core.progress import Progress
from rlm_core.prompts import (
    COMPACTION_NOTE,
    COMPACTION_REQUEST,
    FINAL_ANSWER_REQUEST,
    NO_CODE_NUDGE,
    RLM_SYSTEM_PROMPT,
    build_rlm_system_prompt,
    build_user_prompt,
    compaction_resume,
)
from rlm_core.repl import host_output
from rlm_core.threads import DaemonThreadPool
from rlm_core.tokens import DEFAULT_CONTEXT_LIMIT, estimate_message_tokens
from rlm_core.types import (
    CodeBlock,
    Messages,
    QueryMetadata,
    REPLResult,
    RLMChatCompletion,
    RLMIteration,
    RLMMetadata,
    UsageSummary,
    check_context,
)
from rlm_core.usage import Limits, UsageLedger, check_budget_is_priced

T = TypeVar("T")
R = TypeVar("R")

SubcallStart = Callable[[int, str, str], None]
SubcallComplete = Callable[[int, str, float, str | None], None]
IterationStart = Callable[[int, int], None]
IterationComplete = Callable[[int, int, float], None]


_SECRET_WORDS = ("token", "secret", "password", "credential", "auth")


def _is_secret(key: str) -> bool:
    low = key.lower()
    return ("api" in low and "key" in low) or any(word in low for word in _SECRET_WORDS)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<redacted>" if _is_secret(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _filter_secrets(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Kwargs safe to log: API keys, tokens, secrets, passwords, credentials and auth
    values are dropped at the top level and redacted at any depth (headers, ``env``)."""
    return {key: _redact(value) for key, value in (kwargs or {}).items() if not _is_secret(key)}


SETUP_CODE = Setting("setup_code", str | None, None)
"""The RLM's own key in ``environment_kwargs``: code run once after the context is loaded.
Every other key is a setting of the environment."""


@dataclass(frozen=True)
class _Rule:
    """The type and range an RLM argument must have."""

    kind: Any
    rule: str
    ok: Callable[[Any], bool]
    hint: str = ""


_ARGUMENT_RULES: dict[str, _Rule] = {
    "depth": _Rule(int, ">= 0", lambda v: v >= 0),
    "max_depth": _Rule(int, ">= 0", lambda v: v >= 0, "0 makes completion a plain LM call"),
    "max_iterations": _Rule(int, ">= 1", lambda v: v >= 1),
    "max_budget": _Rule(float | None, "> 0", lambda v: v > 0, "None means no budget"),
    "max_timeout": _Rule(float | None, "> 0", lambda v: v > 0, "None means no time limit"),
    "max_tokens": _Rule(int | None, ">= 1", lambda v: v >= 1, "None means no token limit"),
    "max_errors": _Rule(
        int | None, ">= 1", lambda v: v >= 1, "1 stops at the first turn with a failing cell"
    ),
    "max_concurrent_subcalls": _Rule(int, ">= 1", lambda v: v >= 1),
    "compaction_threshold_pct": _Rule(float, "in (0, 1]", lambda v: 0 < v <= 1),
}
"""The numeric arguments of :class:`RLM`; values ``rlms`` 0.1.3 gives a meaning to pass
(``max_depth=0``: every completion is a plain LM call)."""


def _check_arguments(arguments: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigurationError` for a numeric RLM argument of the wrong type or out
    of range."""
    for name, rule in _ARGUMENT_RULES.items():
        value = arguments[name]
        if not matches_type(value, rule.kind):
            raise ConfigurationError(
                f"RLM argument {name} must be {describe_type(rule.kind)}, "
                f"not {type(value).__name__} ({value!r})"
            )
        if value is not None and not rule.ok(value):
            raise ConfigurationError(
                f"RLM argument {name} must be {rule.rule}, not {value!r}"
                + (f"; {rule.hint}" if rule.hint else "")
            )


def _safe_call(callback: Callable[..., None] | None, *args: Any) -> None:
    if callback is None:
        return
    with host_output(), contextlib.suppress(Exception):  # never break a run, never print
        callback(*args)  # into a cell's output (callbacks may run on a cell's thread)


class _Backends:
    """The backend instances of a run tree (shared by every child RLM)."""

    def __init__(
        self,
        backend: str,
        backend_kwargs: dict[str, Any],
        other_backends: Sequence[str] | None,
        other_backend_kwargs: Sequence[dict[str, Any]] | None,
    ) -> None:
        registry = get_registry()
        self.default: Backend = registry.backend(backend).factory(**backend_kwargs)
        self.others: list[Backend] = []
        for name, kwargs in zip(other_backends or [], other_backend_kwargs or [], strict=False):
            self.others.append(registry.backend(name).factory(**dict(kwargs or {})))
        self.by_model: dict[str, Backend] = {}
        for b in (self.default, *self.others):
            self.by_model.setdefault(b.model_name, b)
        self._closed = False

    def route(self, model: str | None, depth: int) -> Backend:
        """The backend for a sub-call from code at ``depth`` asking for ``model``.

        A model name that a configured backend serves selects it; otherwise code at depth 1
        (the root RLM's cells) uses the first of ``other_backends`` when given, and
        everything else the main backend (called with ``model`` as an override).
        """
        if model and model in self.by_model:
            return self.by_model[model]
        if depth == 1 and self.others:
            return self.others[0]
        return self.default

    def for_root(self, model: str | None) -> Backend:
        """The backend for an RLM's own (root) calls: the one serving ``model`` when a
        configured backend does, else the main backend (called with ``model``)."""
        if model and model in self.by_model:
            return self.by_model[model]
        return self.default

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for b in (self.default, *self.others):
            b.close()


def _error_completion(
    model: str, prompt: Any, message: str, elapsed: float = 0.0
) -> RLMChatCompletion:
    return RLMChatCompletion(
        root_model=model,
        prompt=prompt,
        response=f"Error: {message}",
        usage_summary=UsageSummary(),
        execution_time=elapsed,
        error=message,
    )


def _refusal(exceeded: LimitExceededError) -> str:
    """Why a sub-call was not made, in ``rlms``'s words where it has them
    (``Timeout exhausted (12.3s of 10.0s)``, ``Budget exhausted (spent $... of $...)``)."""
    if isinstance(exceeded, TimeoutExceededError):
        return f"Timeout exhausted ({exceeded.elapsed:.1f}s of {exceeded.timeout:.1f}s)"
    if isinstance(exceeded, BudgetExceededError) and exceeded.spent >= exceeded.budget:
        return f"Budget exhausted (spent ${exceeded.spent:.6f} of ${exceeded.budget:.6f})"
    if isinstance(exceeded, TokenLimitExceededError):
        used, limit = exceeded.tokens_used, exceeded.token_limit
        return f"Token limit exhausted ({used:,} of {limit:,} tokens)"
    return str(exceeded)


class _Run:
    """One ``completion`` call: serves its cells' sub-calls on its RLM's worker threads."""

    def __init__(self, rlm: RLM, ledger: UsageLedger, backends: _Backends) -> None:
        self.rlm = rlm
        self.ledger = ledger
        self.backends = backends
        self._queued: set[Future[Any]] = set()
        self._queued_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        threads = self.rlm._subcall_threads()
        futures = [threads.submit(fn, item) for item in items]
        with self._queued_lock:
            self._queued.update(futures)
        try:
            return [interrupts.wait_for(future) for future in futures]
        finally:
            for future in futures:  # when interrupted: the calls that have not started
                future.cancel()
            with self._queued_lock:
                self._queued.difference_update(futures)

    def close(self, wait: bool = True) -> None:
        """End the run: cancel its sub-calls that have not started (a cell that timed out
        may have left some queued) and, if ``wait``, wait for those running."""
        with self._queued_lock:
            queued = list(self._queued)
        for future in queued:
            future.cancel()
        if wait:
            futures_wait(queued)

    def _notify(self, kind: str, prompt: Any, model: str | None, result: RLMChatCompletion) -> None:
        with host_output():
            get_registry().hook.rlm_on_subcall(
                kind=kind, prompt=prompt, model=model, depth=self.rlm.depth, result=result
            )

    # -- SubcallHandler -----------------------------------------------------------------

    def _plain(self, prompt: Any, model: str | None, kind: str) -> RLMChatCompletion:
        progress = self.rlm.verbose
        progress.subcall_started()
        failed = True
        try:
            result = self._call_lm(prompt, model)
            failed = result.error is not None
        finally:
            progress.subcall_finished(failed)
        self._notify(kind, prompt, model, result)
        return result

    def _call_lm(self, prompt: Any, model: str | None) -> RLMChatCompletion:
        backend = self.backends.route(model, self.rlm.depth + 1)
        name = model or backend.model_name
        exceeded = self.ledger.exceeded()
        if exceeded is not None:
            result = _error_completion(name, prompt, _refusal(exceeded))
        else:
            start = time.perf_counter()
            try:
                reply = backend.complete(to_messages(prompt), model)
            except Exception as exc:
                result = _error_completion(
                    name,
                    prompt,
                    f"LM query failed - {type(exc).__name__}: {exc}",
                    time.perf_counter() - start,
                )
            else:
                usage = self.ledger.record(reply.model, reply.usage, self.rlm.depth + 1)
                result = RLMChatCompletion(
                    root_model=reply.model,
                    prompt=prompt,
                    response=reply.text,
                    usage_summary=UsageSummary({reply.model: usage}),
                    execution_time=time.perf_counter() - start,
                )
        return result

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._plain(prompt, model, "llm_query")

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return self._map(lambda p: self._plain(p, model, "llm_query"), list(prompts))

    def rlm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        rlm = self.rlm
        if rlm.depth + 1 >= rlm.max_depth:
            return self._plain(prompt, model, "rlm_query")
        child_depth = rlm.depth + 1
        name = model or rlm._root_model_name()
        exceeded = self.ledger.exceeded()
        if exceeded is not None:
            result = _error_completion(name, prompt, _refusal(exceeded))
            self._notify("rlm_query", prompt, model, result)
            return result
        preview = prompt[:80] if isinstance(prompt, str) else str(prompt)[:80]
        _safe_call(rlm.on_subcall_start, child_depth, name, preview)
        start = time.perf_counter()
        error: str | None = None
        child = rlm._spawn_child(model, self.ledger, self.backends)
        child.verbose = rlm.verbose.child()
        rlm.verbose.child_started(child_depth)
        try:
            result = child.completion(prompt)
        except BudgetExceededError as exc:
            error = f"Child RLM budget exceeded - {exc}"
            result = _error_completion(name, prompt, error, time.perf_counter() - start)
        except Exception as exc:
            error = f"Child RLM completion failed - {type(exc).__name__}: {exc}"
            result = _error_completion(name, prompt, error, time.perf_counter() - start)
        finally:
            child.close()
            rlm.verbose.child_finished(child_depth, error is not None)
            _safe_call(
                rlm.on_subcall_complete, child_depth, name, time.perf_counter() - start, error
            )
        if error is not None and child.logger is not None:
            result.metadata = child.logger.get_trajectory()  # the child's turns until it failed
        self._notify("rlm_query", prompt, model, result)
        return result

    def rlm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return self._map(lambda p: self.rlm_query(p, model), list(prompts))


def _budget_between_cells(environment: str, max_timeout: float) -> str:
    """The warning for ``max_timeout`` on an environment that cannot interrupt a cell."""
    note = CAPABILITY_NOTES[TIMEOUT]
    alternatives = " or ".join(f"environment={name!r}" for name in note.builtin_environments)
    message = (
        f"max_timeout={max_timeout:g} is checked only between cells on the {environment!r} "
        f"environment (and when a cell makes a sub-LM call): it lacks the {TIMEOUT!r} "
        f"capability ({note.meaning}), so a cell that runs past the deadline is not stopped "
        "and the completion overruns by as long as that cell takes."
    )
    if alternatives:
        message += f" Use {alternatives} to have a running cell interrupted at the deadline."
    return message


class RLM:
    """A Recursive Language Model: ``RLM(...).completion(context, root_prompt=question)``.

    Arguments and defaults are those of ``rlms`` 0.1.3's ``RLM``:

    * ``backend``/``backend_kwargs``: the root LM (``"openai"``, ``"anthropic"``,
      ``"scripted"``, ...; ``backend_kwargs["model_name"]`` names the model).
    * ``environment``/``environment_kwargs``: where cells run (``"local"`` by default;
      provider plugins add ``"modal"``, ``"e2b"``, ...). ``environment_kwargs`` may hold
      ``setup_code`` to run once after the context is loaded.
    * ``depth``/``max_depth``: ``rlm_query`` spawns a child RLM at depth+1 while
      depth+1 < max_depth, else falls back to a plain LM call.
    * ``max_iterations``: root turns before a final answer is forced.
    * ``max_budget`` (USD), ``max_timeout`` (s), ``max_tokens`` (input+output): budgets of
      the whole recursion tree; exceeding one raises ``BudgetExceededError``,
      ``TimeoutExceededError`` or ``TokenLimitExceededError`` (with ``partial_answer``).
      On an environment without the ``timeout`` capability (``local``) a running cell
      cannot be interrupted, so ``max_timeout`` is checked only between cells (and at
      sub-LM calls); such an RLM warns once, with an
      :class:`~rlm_core.exceptions.RLMWarning`, when it is made.
    * ``max_errors``: consecutive iterations with a failing cell before
      ``ErrorThresholdExceededError``.
    * ``custom_system_prompt``, ``orchestrator``, ``user_prologue``: the root prompt.
    * ``other_backends``/``other_backend_kwargs``: extra LMs; the first serves the root
      RLM's sub-calls, and each is selectable by model name (``llm_query(p, model=...)``).
    * ``logger`` (:class:`RLMLogger`), ``verbose``: trajectory capture and console output.
    * ``persistent``: keep the REPL (and past conversations as ``history_N``) across
      ``completion`` calls; call :meth:`close` when done.
    * ``custom_tools``/``custom_sub_tools``: functions and values placed in the REPL (sub
      tools go to child RLMs; ``None`` inherits, ``{}`` disables).
    * ``compaction``/``compaction_threshold_pct``: summarise the root history when it
      reaches that fraction of the model's context window; the full history stays in the
      REPL as ``history``.
    * ``max_concurrent_subcalls``: bound on concurrent ``*_batched`` calls.
    * ``on_subcall_start(depth, model, preview)``, ``on_subcall_complete(depth, model,
      seconds, error)``, ``on_iteration_start(depth, n)``,
      ``on_iteration_complete(depth, n, seconds)``: progress callbacks.
    * ``sampling_args``/``sub_sampling_args``: sampling parameters for the root / sub LMs.
    """

    def __init__(
        self,
        backend: str = "openai",
        backend_kwargs: dict[str, Any] | None = None,
        environment: str = "local",
        environment_kwargs: dict[str, Any] | None = None,
        depth: int = 0,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_budget: float | None = None,
        max_timeout: float | None = None,
        max_tokens: int | None = None,
        max_errors: int | None = None,
        custom_system_prompt: str | None = None,
        other_backends: list[str] | None = None,
        other_backend_kwargs: list[dict[str, Any]] | None = None,
        logger: RLMLogger | None = None,
        verbose: bool = False,
        persistent: bool = False,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        compaction: bool = False,
        compaction_threshold_pct: float = 0.85,
        max_concurrent_subcalls: int = 4,
        on_subcall_start: SubcallStart | None = None,
        on_subcall_complete: SubcallComplete | None = None,
        on_iteration_start: IterationStart | None = None,
        on_iteration_complete: IterationComplete | None = None,
        sampling_args: dict[str, Any] | None = None,
        sub_sampling_args: dict[str, Any] | None = None,
        orchestrator: bool = True,
        user_prologue: str | None = None,
    ) -> None:
        backend_kwargs = dict(backend_kwargs or {})
        if sampling_args is not None:
            merged = dict(backend_kwargs.get("sampling_args") or {})
            merged.update(sampling_args)
            backend_kwargs["sampling_args"] = merged
        if sub_sampling_args is not None:
            if other_backends is None:
                other_backends = [backend]
                other_backend_kwargs = [dict(backend_kwargs)]
            else:
                other_backend_kwargs = [dict(kw or {}) for kw in (other_backend_kwargs or [{}])]
            first = dict(other_backend_kwargs[0])
            merged = dict(first.get("sampling_args") or {})
            merged.update(sub_sampling_args)
            first["sampling_args"] = merged
            other_backend_kwargs[0] = first
        if other_backends is not None and len(other_backends) != len(other_backend_kwargs or []):
            raise ConfigurationError(
                "other_backends and other_backend_kwargs must have the same length"
            )
        _check_arguments(
            {
                "depth": depth,
                "max_depth": max_depth,
                "max_iterations": max_iterations,
                "max_budget": max_budget,
                "max_timeout": max_timeout,
                "max_tokens": max_tokens,
                "max_errors": max_errors,
                "max_concurrent_subcalls": max_concurrent_subcalls,
                "compaction_threshold_pct": compaction_threshold_pct,
            }
        )
        if max_budget is not None:
            others = zip(other_backends or [], other_backend_kwargs or [], strict=False)
            check_budget_is_priced(
                [(backend, backend_kwargs), *((n, kw or {}) for n, kw in others)]
            )

        self.backend = backend
        self.backend_kwargs = backend_kwargs
        self.environment_type = environment
        self.environment_kwargs = dict(environment_kwargs or {})
        self.depth = depth
        self.max_depth = max_depth
        self.max_iterations = max_iterations
        self.max_budget = max_budget
        self.max_timeout = max_timeout
        self.max_tokens = max_tokens
        self.max_errors = max_errors
        self.system_prompt = custom_system_prompt or RLM_SYSTEM_PROMPT
        self.other_backends = other_backends
        self.other_backend_kwargs = other_backend_kwargs
        self.logger = logger
        self.verbose = Progress(verbose)
        self.persistent = persistent
        self.custom_tools = custom_tools
        self.custom_sub_tools = custom_sub_tools if custom_sub_tools is not None else custom_tools
        self._tools = parse_tools(custom_tools)
        parse_tools(self.custom_sub_tools)  # validate early
        self.compaction = compaction
        self.compaction_threshold_pct = compaction_threshold_pct
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.on_subcall_start = on_subcall_start
        self.on_subcall_complete = on_subcall_complete
        self.on_iteration_start = on_iteration_start
        self.on_iteration_complete = on_iteration_complete
        self.orchestrator = orchestrator
        self.user_prologue = user_prologue

        self._environment_factory: Callable[..., Environment] = (
            get_registry().environment(environment).factory
        )
        # Settings are checked now, not at the first completion: unknown names and types
        # against the environment's declaration, ranges by constructing it (not starting
        # it); that instance serves the first completion.
        settings = dict(self.environment_kwargs)
        check_environment_settings(
            self._environment_factory, settings, environment, extra=[SETUP_CODE], complete=True
        )
        self._setup_code: str | None = settings.pop(SETUP_CODE.name, None)
        self._environment_settings = settings
        self._unstarted_env: Environment | None = self._environment_factory(**settings)
        # The capabilities of these settings (one may add a capability: a kernel in a
        # process of its own can interrupt a cell; egress off claims network_off).
        caps: frozenset[str] = getattr(self._unstarted_env, "capabilities", frozenset())
        if persistent and PERSISTENT not in caps:
            self._unstarted_env = None
            raise ConfigurationError(
                f"persistent=True is not supported by environment {environment!r} "
                f"(it does not declare the {PERSISTENT!r} capability)"
            )
        if max_timeout is not None and TIMEOUT not in caps:
            warnings.warn(_budget_between_cells(environment, max_timeout), RLMWarning, stacklevel=2)

        self._backends: _Backends | None = None
        self._owns_backends = True
        self._model_override: str | None = None
        self._parent_ledger: UsageLedger | None = None
        self._persistent_env: Environment | None = None
        self._best_partial_answer: str | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.RLock()
        self._threads: DaemonThreadPool | None = None
        self._threads_pid = 0  # the process they run in: none of them survives a fork

        if self.logger is not None or verbose:
            metadata = RLMMetadata(
                root_model=self.backend_kwargs.get("model_name", "unknown"),
                max_depth=max_depth,
                max_iterations=max_iterations,
                backend=backend,
                backend_kwargs=_filter_secrets(self.backend_kwargs),
                environment_type=environment,
                environment_kwargs=_filter_secrets(self.environment_kwargs),
                other_backends=other_backends,
            )
            if self.logger is not None:
                self.logger.log_metadata(metadata)
            self.verbose.print_metadata(metadata)

    # -- wiring -------------------------------------------------------------------------

    def _get_backends(self) -> _Backends:
        with self._lock:
            if self._backends is None:
                self._backends = _Backends(
                    self.backend,
                    self.backend_kwargs,
                    self.other_backends,
                    self.other_backend_kwargs,
                )
            return self._backends

    def _root_model_name(self) -> str:
        if self._model_override:
            return self._model_override
        if self._backends is not None:
            return self._backends.default.model_name
        return str(self.backend_kwargs.get("model_name", "unknown"))

    def _subcall_threads(self) -> DaemonThreadPool:
        """This RLM's ``max_concurrent_subcalls`` worker threads for batched sub-calls, kept
        across its completions (they run one at a time) until :meth:`close`; a child RLM
        has its own."""
        with self._lock:
            if self._threads is None or self._threads_pid != os.getpid():
                self._threads = DaemonThreadPool(
                    max_workers=max(1, self.max_concurrent_subcalls),
                    thread_name_prefix=f"rlm-subcall-d{self.depth}",
                )
                self._threads_pid = os.getpid()
            return self._threads

    def _spawn_child(self, model: str | None, ledger: UsageLedger, backends: _Backends) -> RLM:
        child = RLM(
            backend=self.backend,
            backend_kwargs=self.backend_kwargs,
            environment=self.environment_type,
            environment_kwargs=self.environment_kwargs,
            depth=self.depth + 1,
            max_depth=self.max_depth,
            max_iterations=self.max_iterations,
            max_errors=self.max_errors,
            custom_system_prompt=self.system_prompt,
            other_backends=self.other_backends,
            other_backend_kwargs=self.other_backend_kwargs,
            logger=RLMLogger() if self.logger is not None else None,
            custom_tools=self.custom_sub_tools,
            custom_sub_tools=self.custom_sub_tools,
            compaction=self.compaction,
            compaction_threshold_pct=self.compaction_threshold_pct,
            max_concurrent_subcalls=self.max_concurrent_subcalls,
            on_subcall_start=self.on_subcall_start,
            on_subcall_complete=self.on_subcall_complete,
            on_iteration_start=self.on_iteration_start,
            on_iteration_complete=self.on_iteration_complete,
            orchestrator=self.orchestrator,
        )
        child._backends = backends
        child._owns_backends = False
        child._model_override = model or self._model_override
        child._parent_ledger = ledger
        return child

    def _start_environment(self, run: _Run, prompt: Any) -> Environment:
        session = Session(
            subcalls=run,
            depth=self.depth + 1,
            custom_tools=self._tools,
            max_concurrent_subcalls=self.max_concurrent_subcalls,
        )
        if self.persistent and self._persistent_env is not None:
            env = self._persistent_env
            env.rebind(session)
            env.set_variable("answer", {"content": "", "ready": False})
            env.add_context(prompt, checked=True)  # by _completion
            return env
        unstarted, self._unstarted_env = self._unstarted_env, None
        if unstarted is None:
            unstarted = self._environment_factory(**self._environment_settings)
        env = unstarted
        setup_code = self._setup_code
        try:
            env.start(session)
            env.add_context(prompt, 0, checked=True)  # by _completion
            if self.compaction:
                env.set_variable("history", [])
            if setup_code:
                result = env.execute(setup_code)
                if result.error:
                    raise RuntimeError(f"environment setup_code failed: {result.error}")
        except BaseException:
            env.close()
            raise
        if self.persistent:
            self._persistent_env = env
        return env

    # -- the loop -----------------------------------------------------------------------

    def _setup_prompt(self, prompt: Any, root_prompt: str | None) -> Messages:
        messages = build_rlm_system_prompt(
            system_prompt=self.system_prompt,
            query_metadata=QueryMetadata.of(prompt),
            custom_tools=self.custom_tools,
            root_prompt=root_prompt,
            orchestrator=self.orchestrator,
        )
        if self.user_prologue:
            messages.append({"role": "user", "content": self.user_prologue})
        if self.compaction:
            messages[0]["content"] += COMPACTION_NOTE
        return messages

    def _root_call(self, messages: Messages, run: _Run) -> str:
        run.ledger.check(self._best_partial_answer)
        backend = run.backends.for_root(self._model_override)
        reply = backend.complete(list(messages), self._model_override)
        run.ledger.record(reply.model, reply.usage, self.depth)
        interrupts.check()
        return reply.text

    def _usage_snapshot(self, run: _Run) -> UsageSummary | None:
        """The run's usage so far, when a logger will record the turn's root usage."""
        return run.ledger.summary() if self.logger is not None else None

    @staticmethod
    def _usage_since(before: UsageSummary | None, run: _Run) -> dict[str, Any] | None:
        """The usage recorded since ``before`` (``None`` when nothing is logged)."""
        return None if before is None else usage_delta(before, run.ledger.summary())

    @staticmethod
    def _cell_time_left(run: _Run) -> float | None:
        """Seconds until the run's deadline, for environments that can interrupt cells."""
        deadline = run.ledger.deadline()
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    def _run_cell(self, env: Environment, code: str, run: _Run) -> REPLResult:
        hook = get_registry().hook
        try:
            with host_output():
                hook.rlm_before_cell(code=code, depth=self.depth, environment=env)
        except CellRejectedError as exc:
            message = f"CellRejectedError: {exc}"
            return REPLResult(stderr=message, error=message)
        try:
            result = env.execute(code, timeout=self._cell_time_left(run))
        except SandboxRestartedError as exc:
            message = f"SandboxRestartedError: {exc}"
            result = REPLResult(stderr=message, error=message)
        interrupts.check()
        with host_output():
            hook.rlm_after_cell(code=code, result=result, depth=self.depth, environment=env)
        return result

    def _maybe_compact(
        self, messages: Messages, run: _Run, env: Environment, count: int
    ) -> tuple[Messages, int]:
        backend = run.backends.for_root(self._model_override)
        limit = backend.context_limit(self._model_override) or DEFAULT_CONTEXT_LIMIT
        used = estimate_message_tokens(messages)
        if used < int(self.compaction_threshold_pct * limit):
            return messages, count
        count += 1
        summary = self._root_call([*messages, {"role": "user", "content": COMPACTION_REQUEST}], run)
        env.extend_variable("history", [{"type": "summary", "content": summary}])
        self.verbose.print_compaction(used, limit)
        fixed_prefix = 3 if self.user_prologue else 2  # system, metadata[, prologue]
        compacted = [
            *messages[:fixed_prefix],
            {"role": "assistant", "content": summary},
            {"role": "user", "content": compaction_resume(count)},
        ]
        return compacted, count

    def completion(self, prompt: Any, root_prompt: str | None = None) -> RLMChatCompletion:
        """Answer over ``prompt`` (the context: str, bytes, list or dict of any size).

        ``root_prompt`` is a short question the root LM sees directly. Returns an
        :class:`RLMChatCompletion` whose ``usage_summary`` covers every LM call of the
        run: root, sub-calls and child RLMs. Calls on one instance run one at a time (they
        share its logger, persistent REPL and best partial answer); use one ``RLM`` per
        concurrent task.
        """
        with (
            self._run_lock,
            interrupts.recording_ctrl_c(),
            self.verbose.running(self.depth, self.max_iterations),
        ):
            return self._completion(prompt, root_prompt)

    def _completion(self, prompt: Any, root_prompt: str | None) -> RLMChatCompletion:
        persistent_env = self._persistent_env if self.persistent else None
        check_context(prompt, persistent_env.get_context_count() if persistent_env else 0)
        start = time.perf_counter()
        now = time.monotonic()
        ledger = UsageLedger(
            Limits(
                max_budget=self.max_budget,
                max_tokens=self.max_tokens,
                deadline=None if self.max_timeout is None else now + self.max_timeout,
                timeout=self.max_timeout,
                started=now,
            ),
            parent=self._parent_ledger,
        )
        self.verbose.track(ledger)
        self._best_partial_answer = None
        backends = self._get_backends()
        if self.depth >= self.max_depth:
            return self._fallback_answer(prompt, ledger, backends, start)
        if self.logger is not None:
            self.logger.start_completion(depth=self.depth)

        run = _Run(self, ledger, backends)
        env = self._start_environment(run, prompt)
        finished = False
        try:
            result = self._loop(prompt, root_prompt, run, env, start)
            finished = True
            return result
        except KeyboardInterrupt:
            raise CancellationError(
                partial_answer=self._best_partial_answer,
                message="Execution cancelled by user (Ctrl+C)",
            ) from None
        finally:
            run.close(wait=finished)  # on errors and Ctrl+C, do not wait for calls in flight
            if not self.persistent:
                env.close()

    def _loop(
        self, prompt: Any, root_prompt: str | None, run: _Run, env: Environment, start: float
    ) -> RLMChatCompletion:
        messages = self._setup_prompt(prompt, root_prompt)
        consecutive_errors = 0
        compactions = 0
        for i in range(self.max_iterations):
            run.ledger.check(self._best_partial_answer)
            usage_before = self._usage_snapshot(run)
            if self.compaction:
                messages, compactions = self._maybe_compact(messages, run, env, compactions)
            _safe_call(self.on_iteration_start, self.depth, i + 1)
            self.verbose.iteration_started(self.depth, i + 1, self.max_iterations)
            iter_start = time.perf_counter()
            messages.append(
                build_user_prompt(
                    root_prompt,
                    i,
                    env.get_context_count(),
                    env.get_history_count(),
                    max_iterations=self.max_iterations,
                    history_is_trajectory=self.compaction,
                )
            )
            response = self._root_call(messages, run)
            root_usage = self._usage_since(usage_before, run)
            blocks: list[CodeBlock] = []
            final_answer: str | None = None
            for code in find_code_blocks(response):
                result = self._run_cell(env, code, run)
                blocks.append(CodeBlock(code, result))
                if result.final_answer is not None:
                    final_answer = result.final_answer
                    break
            iteration = RLMIteration(
                prompt=list(messages),
                response=response,
                code_blocks=blocks,
                final_answer=final_answer,
                iteration_time=time.perf_counter() - iter_start,
            )
            if response and response.strip():
                self._best_partial_answer = response
            if self.logger is not None:
                self.logger.log(iteration, root_usage)
            self.verbose.print_iteration(iteration, i + 1)
            _safe_call(self.on_iteration_complete, self.depth, i + 1, iteration.iteration_time)

            if final_answer is not None:
                return self._finish(prompt, final_answer, messages, run, env, start)

            new_messages = format_iteration(iteration)
            if not blocks:
                new_messages.append({"role": "user", "content": NO_CODE_NUDGE})
            messages.extend(new_messages)
            if self.compaction:
                env.extend_variable("history", [new_messages])

            failed = [b.result.error for b in blocks if b.result.error]
            consecutive_errors = consecutive_errors + 1 if failed else 0
            if self.max_errors is not None and consecutive_errors >= self.max_errors:
                self.verbose.print_limit("errors", f"{consecutive_errors} consecutive errors")
                raise ErrorThresholdExceededError(
                    error_count=consecutive_errors,
                    threshold=self.max_errors,
                    last_error=failed[-1],
                    partial_answer=self._best_partial_answer,
                )

        run.ledger.check(self._best_partial_answer)
        final_prompt = [*messages, {"role": "user", "content": FINAL_ANSWER_REQUEST}]
        usage_before = self._usage_snapshot(run)
        answer = self._root_call(final_prompt, run)
        if self.logger is not None:
            self.logger.log(
                RLMIteration(
                    prompt=final_prompt, response=answer, code_blocks=[], final_answer=answer
                ),
                self._usage_since(usage_before, run),
            )
        return self._finish(prompt, answer, messages, run, env, start)

    def _finish(
        self,
        prompt: Any,
        answer: str,
        messages: Messages,
        run: _Run,
        env: Environment,
        start: float,
    ) -> RLMChatCompletion:
        if self.persistent:
            if self.compaction:
                # ``history`` stays the compaction trajectory; past runs are history_N.
                trajectory = env.get_variable("history")
                env.add_history(messages)
                env.set_variable("history", trajectory)
            else:
                env.add_history(messages)
        usage = run.ledger.summary()
        elapsed = time.perf_counter() - start
        self.verbose.print_final_answer(answer, elapsed, usage)
        completion = RLMChatCompletion(
            root_model=self._root_model_name(),
            prompt=prompt,
            response=answer,
            usage_summary=usage,
            execution_time=elapsed,
            metadata=self.logger.get_trajectory() if self.logger is not None else None,
        )
        with host_output():
            get_registry().hook.rlm_on_completion(completion=completion, depth=self.depth)
        return completion

    def _fallback_answer(
        self, prompt: Any, ledger: UsageLedger, backends: _Backends, start: float
    ) -> RLMChatCompletion:
        """At ``depth >= max_depth`` an RLM is a plain LM call."""
        ledger.check()
        backend = backends.for_root(self._model_override)
        reply = backend.complete(to_messages(prompt), self._model_override)
        ledger.record(reply.model, reply.usage, self.depth)
        completion = RLMChatCompletion(
            root_model=reply.model,
            prompt=prompt,
            response=reply.text,
            usage_summary=ledger.summary(),
            execution_time=time.perf_counter() - start,
        )
        with host_output():
            get_registry().hook.rlm_on_completion(completion=completion, depth=self.depth)
        return completion

    async def acompletion(self, prompt: Any, root_prompt: str | None = None) -> RLMChatCompletion:
        """Asyncio twin of :meth:`completion` (runs the loop in a worker thread)."""
        return await asyncio.to_thread(self.completion, prompt, root_prompt)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the persistent environment, the worker threads and the backends this RLM
        created."""
        for env in (self._persistent_env, self._unstarted_env):
            if env is not None:
                env.close()
        self._persistent_env = self._unstarted_env = None
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)
        if self._owns_backends and self._backends is not None:
            self._backends.close()
            self._backends = None

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
