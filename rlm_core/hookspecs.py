"""Hook specifications of the ``rlm`` pluggy project.

A plugin is any module or object with functions decorated by :data:`rlm_core.hookimpl`
whose names match the specs below. Hooks are always called with keyword arguments, and an
implementation may accept only the arguments it needs, so new arguments can be added to a
spec without breaking existing plugins.

Two kinds of hooks exist:

* **Registration** hooks (``rlm_register_environments``, ``rlm_register_backends``) are
  how environments and backends become selectable by name, and ``rlm_register_prices``
  how models get a price. The core passes a ``register`` callback; plugins never touch
  core state directly. Built-ins use the same hooks.
* **Event** hooks (``rlm_before_cell``, ``rlm_after_cell``, ``rlm_on_subcall``,
  ``rlm_on_completion``) let logging, metrics and policy plugins observe a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rlm_core.environments.base import Environment
    from rlm_core.types import REPLResult, RLMChatCompletion

PROJECT_NAME = "rlm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marker for hook specifications of the ``rlm`` project."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations: decorate plugin functions with ``@hookimpl``."""


@hookspec
def rlm_register_environments(register: Callable[..., None]) -> None:
    """Register environments (sandboxes cells run in).

    Call ``register(name, environment_class)`` once per environment, where
    ``environment_class`` is a subclass of :class:`rlm_core.Environment`. ``name`` is what
    users pass as ``RLM(environment=name)``; for entry-point plugins it must equal the
    entry-point name in the ``rlm.environments`` group.

    Importing the plugin module must not import the provider's SDK: import it inside the
    environment's methods, so listing environments stays cheap and safe.
    """


@hookspec
def rlm_register_backends(register: Callable[..., None]) -> None:
    """Register LM backends.

    Call ``register(name, factory)`` once per backend, where ``factory(**backend_kwargs)``
    returns a :class:`rlm_core.backends.Backend` (usually the class itself). ``name`` is
    what users pass as ``RLM(backend=name)``.
    """


@hookspec
def rlm_register_prices(register: Callable[..., None]) -> None:
    """Register model prices (USD per million tokens), used to cost calls and enforce
    ``max_budget``.

    Call ``register(model, price)`` once per model, where ``price`` is a
    :class:`rlm_core.ModelPrice` or a mapping with ``input`` and ``output`` and optionally
    ``cached_input``, ``cache_write`` and ``long_context`` (see :mod:`rlm_core.pricing`).
    Plugin prices override the table shipped with rlm-core; prices set with
    :func:`rlm_core.register_prices` override plugin prices. Two plugins giving different
    prices for one model is an error. Collected when the plugin is registered: a backend
    plugin's prices are known once its backend is selected.
    """


@hookspec
def rlm_before_cell(code: str, depth: int, environment: Environment) -> None:
    """Called before a ```` ```repl ```` cell runs.

    A policy plugin may raise :class:`rlm_core.CellRejectedError` to stop the cell: it is
    then reported to the root LM as a failed cell with the error's message, and nothing
    runs. Any other exception propagates to the caller of ``completion``.
    """


@hookspec
def rlm_after_cell(code: str, result: REPLResult, depth: int, environment: Environment) -> None:
    """Called after a cell ran, with its :class:`rlm_core.REPLResult`."""


@hookspec
def rlm_on_subcall(
    kind: str, prompt: Any, model: str | None, depth: int, result: RLMChatCompletion
) -> None:
    """Called after each sub-LM call a cell made.

    ``kind`` is ``"llm_query"`` (a plain LM call, including each item of a batch) or
    ``"rlm_query"`` (a child RLM, or its plain-LM fallback at ``max_depth``). ``depth`` is
    the depth of the RLM whose cell made the call. ``result.error`` is set when it failed.
    May be called from several threads at once.
    """


@hookspec
def rlm_on_completion(completion: RLMChatCompletion, depth: int) -> None:
    """Called when an RLM at ``depth`` returns a completion (children included)."""
