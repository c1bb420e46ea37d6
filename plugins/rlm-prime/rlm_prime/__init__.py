"""Prime Intellect sandboxes for rlm-core: ``RLM(environment="prime")``.

The environment (:class:`rlm_prime.environment.PrimeEnvironment`) is registered under the
entry-point name ``prime``; importing this package does not import the
``prime_sandboxes`` SDK.
"""

from rlm_prime.environment import PrimeEnvironment

__all__ = ["PrimeEnvironment"]
__version__ = "0.1.0"
