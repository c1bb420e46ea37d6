"""rlm-example: an example rlm-core sandbox provider.

Each sandbox is a private directory on this machine, driven the way a cloud provider's SDK
is driven (see :mod:`rlm_example.sandbox`). Select it with ``RLM(environment="example")``.
"""

__version__ = "0.1.0"
