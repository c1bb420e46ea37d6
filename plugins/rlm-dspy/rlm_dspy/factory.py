"""``interpreter_factory``: the zero-argument callable ``dspy.RLM`` creates interpreters with."""

from __future__ import annotations

from typing import Any

from rlm_dspy.environments import make_environment
from rlm_dspy.instructions import describe_runtime
from rlm_dspy.interpreter import RLMCoreInterpreter


class InterpreterFactory:
    """Creates one :class:`RLMCoreInterpreter` (one sandbox) per call, on one environment.

    The environment is looked up and its settings checked when the factory is made, so a
    misspelled name or setting fails there, not in the middle of a forward pass. Calls may
    come from several threads at once.
    """

    def __init__(self, environment: str = "subprocess", **environment_kwargs: Any) -> None:
        self.environment = environment
        """The rlm-core environment's entry-point name."""
        self.environment_kwargs: dict[str, Any] = dict(environment_kwargs)
        """The environment's settings, given to each interpreter's environment."""
        self.execution_instructions = describe_runtime(
            make_environment(environment, self.environment_kwargs)
        )
        """What the model is told about the runtime (``dspy.RLM`` reads it)."""

    def __call__(self) -> RLMCoreInterpreter:
        """A new interpreter with its own (not yet started) sandbox."""
        return RLMCoreInterpreter(
            environment=self.environment, environment_kwargs=self.environment_kwargs
        )

    def __repr__(self) -> str:
        settings = "".join(f", {key}={value!r}" for key, value in self.environment_kwargs.items())
        return f"interpreter_factory({self.environment!r}{settings})"


def interpreter_factory(
    environment: str = "subprocess", **environment_kwargs: Any
) -> InterpreterFactory:
    """A factory for ``dspy.RLM(interpreter_factory=...)`` or
    ``dspy.configure(interpreter_factory=...)``: each call creates one interpreter on the
    rlm-core environment named ``environment`` with ``environment_kwargs`` as its settings.

    Raises ``rlm_core.UnknownEnvironmentError`` for a name no installed plugin provides and
    ``rlm_core.ConfigurationError`` for settings the environment rejects (both ``ValueError``).
    """
    return InterpreterFactory(environment, **environment_kwargs)
