"""``RLMCoreInterpreter``: DSPy's ``CodeInterpreter`` protocol on an rlm-core environment.

State persists across :meth:`~RLMCoreInterpreter.execute` calls; ``variables`` are bound before
the code runs; every entry of the mutable :attr:`~RLMCoreInterpreter.tools` dict is a global
function in the sandbox that runs on the host, through rlm-core's bridge, with JSON arguments
and results; ``SUBMIT(...)`` returns :class:`FinalOutput`. Errors in the code raise
``CodeExecutionError``, invalid syntax ``SyntaxError``; a sandbox that died, timed out or lost
its state raises ``CodeInterpreterError`` and ends the session (it is never restarted).
"""

from __future__ import annotations

import inspect
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Self, TypeVar, cast

from dspy.primitives.code_interpreter import CodeInterpreterError
from dspy.utils.callback import BaseCallback
from dspy.utils.callback import with_callbacks as _with_callbacks

from rlm_core import (
    Environment,
    MessageTooLargeError,
    REPLResult,
    RLMChatCompletion,
    SandboxError,
    Session,
    ToolSpec,
    UsageSummary,
)
from rlm_dspy.environments import make_environment
from rlm_dspy.instructions import describe_runtime
from rlm_dspy.outcomes import RunnerMissing, SessionLost, outcome_of
from rlm_dspy.sandbox import CHUNK, INLINE_LIMIT, install_cell, run_cell
from rlm_dspy.sandbox_runner import REQUEST
from rlm_dspy.tool_calls import DISPATCH_TOOL, ToolDispatcher, await_in_sync
from rlm_dspy.values import NotJSONError, invalid_names, json_text

_F = TypeVar("_F", bound=Callable[..., Any])


def with_callbacks(fn: _F) -> _F:
    """DSPy's ``with_callbacks`` (``on_interpreter_*`` callbacks), typed."""
    return cast(_F, _with_callbacks(fn))


class _NoRLMSubcalls:
    """rlm-core's own ``rlm_query`` family is not part of DSPy's protocol: it answers with an
    error (``llm_query`` and ``llm_query_batched`` are DSPy's tools, bound over rlm-core's)."""

    def _refuse(self, prompt: Any, model: str | None) -> RLMChatCompletion:
        message = "not available under dspy.RLM; use llm_query or a dspy sub-module"
        return RLMChatCompletion(
            model or "none", prompt, f"Error: {message}", UsageSummary(), 0.0, error=message
        )

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        return self._refuse(prompt, model)

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        return [self._refuse(prompt, model) for prompt in prompts]

    rlm_query = llm_query
    rlm_query_batched = llm_query_batched


def check_tool_names(tools: Mapping[str, Any]) -> None:
    """``ValueError`` unless every tool name is a plain, non-reserved identifier."""
    invalid = invalid_names(tools)
    if invalid:
        raise ValueError(
            f"tool names must be non-reserved Python identifiers; invalid names: {invalid!r}"
        )


def check_output_fields(fields: Any) -> list[str] | None:
    """The output field names (``None`` without fields); ``ValueError`` for fields that are
    not dicts with unique identifier names, or not JSON-compatible."""
    if fields is None:
        return None
    if not isinstance(fields, list) or not all(isinstance(field, dict) for field in fields):
        raise ValueError("output fields must be a list of dicts with a 'name'")
    names = [field.get("name") for field in fields]
    invalid = invalid_names(names)
    if invalid:
        raise ValueError(f"output field names must be Python identifiers; invalid: {invalid!r}")
    if len(set(names)) != len(names):
        raise ValueError("output field names must be unique")
    try:
        json.dumps(fields, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"output fields must be JSON-compatible: {exc}") from None
    return [str(name) for name in names]


class RLMCoreInterpreter:
    """A DSPy ``CodeInterpreter`` that runs code in an rlm-core environment.

    Args:
        tools: host functions callable from the code by name (positional or keyword
            arguments; JSON-compatible arguments and results). The dict may change between
            executions, as ``dspy.RLM`` changes it.
        output_fields: field definitions (``{"name": ..., "type": ...}``) that give
            ``SUBMIT`` one parameter per field; without them ``SUBMIT(output)``.
        environment: the rlm-core environment's name (``"subprocess"``, ``"local"``,
            ``"loopback"`` or any installed plugin's).
        environment_kwargs: the environment's settings, checked now.
        callbacks: DSPy callbacks for this interpreter (``on_interpreter_*``).
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        environment: str = "subprocess",
        environment_kwargs: Mapping[str, Any] | None = None,
        callbacks: list[BaseCallback] | None = None,
    ) -> None:
        check_tool_names(tools or {})
        check_output_fields(output_fields)
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = None if output_fields is None else [dict(f) for f in output_fields]
        self.callbacks = list(callbacks or [])
        self._environment = make_environment(environment, environment_kwargs)
        self.execution_instructions = describe_runtime(self._environment)
        """What the model is told about this runtime (see :mod:`rlm_dspy.instructions`)."""
        self._dispatcher = ToolDispatcher(self.invoke_tool)
        self._requests = itertools.count(1)
        self._execution = threading.Lock()
        self._lifecycle = threading.RLock()
        self._started = False
        self._ended = False

    @property
    def environment(self) -> Environment:
        """The rlm-core environment the code runs in."""
        return self._environment

    @property
    def started(self) -> bool:
        """Whether the sandbox was started (and the session has not ended since)."""
        return self._started and not self._ended

    # -- lifecycle ----------------------------------------------------------------------

    def _ended_error(self) -> CodeInterpreterError:
        return CodeInterpreterError(
            f"this {self._environment.name!r} interpreter session has ended (it was shut down "
            "or its sandbox failed); create a new interpreter for a fresh session"
        )

    @with_callbacks
    def start(self) -> None:
        """Start the sandbox; does nothing if it is running. ``CodeInterpreterError`` if the
        session has ended or the sandbox cannot start (the session then ends)."""
        with self._lifecycle:
            if self._ended:
                raise self._ended_error()
            if self._started:
                return
            tool = ToolSpec(DISPATCH_TOOL, self._dispatcher, "calls a host tool by name")
            session = Session(subcalls=_NoRLMSubcalls(), custom_tools=[tool])
            try:
                self._environment.start(session)
                result = self._environment.execute(install_cell())
                if result.error:
                    raise SandboxError(f"the runner could not be installed: {result.error}")
            except Exception as exc:
                self._end()
                raise CodeInterpreterError(
                    f"could not start the {self._environment.name!r} environment: {exc}"
                ) from exc
            except BaseException:
                self._end()
                raise
            self._started = True

    def _end(self) -> None:
        self._ended = True
        self._environment.close()

    @with_callbacks
    def shutdown(self) -> None:
        """Stop the sandbox and everything it runs; the session cannot be used again."""
        with self._lifecycle:
            self._end()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- execution ----------------------------------------------------------------------

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Same as :meth:`execute`."""
        return self.execute(code, variables)

    def _request(self, code: str, variables: dict[str, Any] | None, request_id: int) -> str:
        """The request's JSON text, after the checks DSPy's interpreters make."""
        check_tool_names(self.tools)
        fields = check_output_fields(self.output_fields)
        if not isinstance(code, str):
            raise CodeInterpreterError("code must be a string")
        variables = {} if variables is None else variables
        if not isinstance(variables, dict):
            raise CodeInterpreterError("variables must map Python identifiers to JSON values")
        invalid = invalid_names(variables) + [name for name in variables if name in self.tools]
        if invalid:
            raise CodeInterpreterError(
                "variable names must be non-reserved Python identifiers distinct from tool "
                f"names; invalid names: {invalid!r}"
            )
        try:
            bound = ", ".join(
                f"{json.dumps(name)}: {json_text(value, f'variable {name!r}', allow_nan=True)}"
                for name, value in variables.items()
            )
        except NotJSONError as exc:
            raise CodeInterpreterError(str(exc)) from None
        head = json.dumps(
            {"id": request_id, "code": code, "tools": list(self.tools), "output_fields": fields}
        )
        return head[:-1] + ', "variables": {' + bound + "}}"

    @with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code`` in the session (starting it if need be) with ``variables`` bound.

        Returns the last expression's value (JSON, else its ``repr``), else the printed
        output, else ``None``; :class:`FinalOutput` when the code called ``SUBMIT``.
        """
        if not self._execution.acquire(blocking=False):
            raise CodeInterpreterError("this interpreter already has an active execution")
        try:
            request_id = next(self._requests)
            request = self._request(code, variables, request_id)
            self.start()
            self._dispatcher.capture_context()
            try:
                return outcome_of(self._run(request), request_id)
            except RunnerMissing:
                self._install()
                return outcome_of(self._run(request), request_id)
        except SessionLost as exc:
            self._fail(f"the {self._environment.name!r} sandbox {exc}", exc)
        finally:
            self._execution.release()

    def _install(self) -> None:
        result = self._sandbox_call(lambda env: env.execute(install_cell()))
        if result.error:
            self._fail(f"the runner could not be installed again: {result.error}", None)

    def _run(self, request: str) -> REPLResult:
        def send(env: Environment) -> REPLResult:
            if len(request) <= INLINE_LIMIT:
                return env.execute(run_cell(request))
            env.set_variable(REQUEST, [])
            for start in range(0, len(request), CHUNK):
                env.extend_variable(REQUEST, [request[start : start + CHUNK]])
            return env.execute(run_cell(None))

        return self._sandbox_call(send)

    def _sandbox_call(self, call: Callable[[Environment], REPLResult]) -> REPLResult:
        """``call(environment)``; a sandbox failure ends the session."""
        if self._ended:
            raise self._ended_error()
        try:
            return call(self._environment)
        except MessageTooLargeError as exc:
            raise CodeInterpreterError(str(exc)) from exc
        except SandboxError as exc:
            self._fail(f"the {self._environment.name!r} sandbox failed: {exc}", exc)

    def _fail(self, message: str, cause: BaseException | None) -> NoReturn:
        with self._lifecycle:
            self._end()
        raise CodeInterpreterError(
            f"{message}\nThe interpreter's state was lost and its session has ended; create a "
            "new interpreter for a fresh session."
        ) from cause

    # -- tools --------------------------------------------------------------------------

    @with_callbacks
    def invoke_tool(self, tool_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call the tool registered now as ``tool_name`` (awaiting an awaitable result)."""
        tool = self.tools.get(tool_name)
        if tool is None:
            raise CodeInterpreterError(f"Unknown tool: {tool_name}")
        result = tool(*args, **kwargs)
        return await_in_sync(result) if inspect.isawaitable(result) else result
