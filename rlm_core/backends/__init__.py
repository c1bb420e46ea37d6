"""LM backends: the :class:`Backend` interface and the built-in implementations."""

from rlm_core.backends.base import Backend, LMResponse, LMUsage, to_messages

__all__ = ["Backend", "LMResponse", "LMUsage", "to_messages"]
