"""Daytona sandboxes for rlm-core: ``RLM(environment="daytona")``.

The environment (:class:`rlm_daytona.environment.DaytonaEnvironment`) is registered under
the entry-point name ``daytona``; importing this package does not import the ``daytona`` SDK.
"""

from rlm_daytona.environment import DaytonaEnvironment

__all__ = ["DaytonaEnvironment"]
__version__ = "0.1.0"
