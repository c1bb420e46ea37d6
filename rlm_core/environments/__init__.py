"""Environments: the :class:`Environment` contract and the built-in sandboxes."""

from rlm_core.environments.base import Environment, Session, SubcallHandler

__all__ = ["Environment", "Session", "SubcallHandler"]
