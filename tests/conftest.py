"""Shared fixtures for the core test suite."""

from __future__ import annotations
