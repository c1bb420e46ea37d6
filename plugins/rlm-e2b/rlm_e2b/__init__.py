"""E2B sandboxes for rlm-core: ``RLM(environment="e2b")``.

The environment (:class:`rlm_e2b.environment.E2BEnvironment`) is registered under the
entry-point name ``e2b``; importing this package does not import the ``e2b`` SDK.
"""

__version__ = "0.1.0"
