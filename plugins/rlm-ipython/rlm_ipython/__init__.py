"""IPython shells for rlm-core: ``RLM(environment="ipython")``.

``kernel_mode="in_process"`` (the default) runs cells in a private IPython shell in this
process; ``kernel_mode="subprocess"`` runs them in one inside rlm-core's agent in a child
process, with hard cell timeouts. See :class:`~rlm_ipython.environment.IPythonEnvironment`.
"""

from __future__ import annotations

__version__ = "0.1.0"
