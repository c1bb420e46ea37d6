"""rlm-dspy: every rlm-core environment as the code interpreter of ``dspy.RLM``.

``dspy.RLM(signature, interpreter_factory=rlm_dspy.interpreter_factory("subprocess"))`` runs
the model's code in rlm-core's ``subprocess`` environment; any installed environment works
the same way, by its name.
"""

from __future__ import annotations

from rlm_dspy.factory import InterpreterFactory, interpreter_factory
from rlm_dspy.interpreter import RLMCoreInterpreter

__version__ = "0.1.0"

__all__ = ["InterpreterFactory", "RLMCoreInterpreter", "__version__", "interpreter_factory"]
