"""What the conformance suite leaves to the plugin: its settings, its capabilities, its
sandboxes listed and cleaned up by tag, and its glue on the suite's stand-in launcher."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from rlm_conformance import LocalAgentLauncher, RecordingSubcalls
from rlm_example.environment import ExampleEnvironment
from rlm_example.launcher import ExampleLauncher

from rlm_core import ConfigurationError, Session
from rlm_core.environments.base import MEMORY_LIMIT
from rlm_core.environments.launcher import Launcher


@pytest.fixture
def tag() -> Iterator[str]:
    """A tag of this test's own; whatever still carries it afterwards is deleted."""
    mine = "test-" + secrets.token_hex(4)
    yield mine
    ExampleLauncher.cleanup(tag=mine)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'memory_limit_mb'"):
        ExampleEnvironment(memory_limit=512)
    wrong_type: dict[str, Any] = {"tag": 7}
    with pytest.raises(ConfigurationError, match=re.escape("must be str | None")):
        ExampleEnvironment(**wrong_type)
    with pytest.raises(ConfigurationError, match=">= 1"):
        ExampleEnvironment(memory_limit_mb=0)


def test_memory_limit_is_claimed_only_when_set() -> None:
    assert MEMORY_LIMIT not in ExampleEnvironment().capabilities
    assert MEMORY_LIMIT in ExampleEnvironment(memory_limit_mb=512).capabilities
    assert MEMORY_LIMIT not in ExampleEnvironment.capabilities


def test_sandboxes_are_listed_and_cleaned_up_by_tag(tag: str) -> None:
    first, second = ExampleEnvironment(tag=tag), ExampleEnvironment(tag=tag)
    for env in (first, second):
        env.start(Session(subcalls=RecordingSubcalls()))
    try:
        ids = sorted(
            launcher.sandbox_id or "?"
            for launcher in (first.active_launcher, second.active_launcher)
            if launcher is not None
        )
        assert ids == sorted(ExampleLauncher.list_sandboxes(tag=tag) or [])
        listed = ExampleLauncher.list_sandboxes(tag="example") or []  # a label's value
        assert set(ids) <= set(listed)
        cwd = first.execute("import os\nprint(os.getcwd())").stdout.strip()
        assert os.path.isdir(cwd)
        assert sorted(ExampleLauncher.cleanup(tag=tag)) == ids
        assert ExampleLauncher.list_sandboxes(tag=tag) == []
        assert not os.path.exists(cwd)
    finally:
        first.close()
        second.close()


def test_close_deletes_the_sandbox(tag: str) -> None:
    env = ExampleEnvironment(tag=tag)
    env.start(Session(subcalls=RecordingSubcalls()))
    assert len(ExampleLauncher.list_sandboxes(tag=tag) or []) == 1
    env.close()
    assert ExampleLauncher.list_sandboxes(tag=tag) == []


class OfflineExample(ExampleEnvironment):
    """The example environment on the suite's stand-in launcher: how a cloud plugin tests
    its environment class (settings, capabilities, the RLM wiring) without an account."""

    def make_launcher(self) -> Launcher:
        return LocalAgentLauncher("stdio", framing="base64", tag=self.tag)


def test_environment_glue_on_the_stand_in_launcher(tag: str) -> None:
    with OfflineExample(tag=tag, cell_timeout=10) as env:
        env.start(Session(subcalls=RecordingSubcalls()))
        assert LocalAgentLauncher.list_sandboxes(tag=tag) != []
        assert env.execute("print(llm_query('hi'))").stdout == "llm:hi\n"
    assert LocalAgentLauncher.list_sandboxes(tag=tag) == []
