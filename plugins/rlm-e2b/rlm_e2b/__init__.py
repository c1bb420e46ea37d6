"""E2B sandboxes for rlm-core: ``RLM(environment="e2b")``.

The environment (:class:`rlm_e2b.environment.E2BEnvironment`) is registered under the
entry-point name ``e2b``; importing this package does not import the ``e2b`` SDK.
"""

from rlm_e2b.environment import E2BEnvironment

__all__ = ["E2BEnvironment"]
__version__ = "0.1.0"
