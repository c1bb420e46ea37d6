"""Shared fixtures for the core test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lm_server import anthropic_server, openai_server  # noqa: F401

from rlm_core.plugins import get_registry


@pytest.fixture
def register_plugin() -> Iterator[object]:
    """Register throwaway plugin objects; they are unregistered after the test."""
    names: list[str] = []
    registry = get_registry()

    def register(plugin: object, name: str) -> str:
        names.append(registry.register(plugin, name=name))
        return name

    yield register
    for name in names:
        registry.unregister(name)
