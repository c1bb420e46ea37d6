"""``rlm cleanup NAME``: list a provider's leftover sandboxes, stop them by tag, id or all."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from rlm_conformance.doubles import LocalAgentEnvironment, RecordingSubcalls

from rlm_core import hookimpl
from rlm_core.cli import main
from rlm_core.environments.base import Session

pytestmark = pytest.mark.timeout(120)


class FakeCloud:
    @hookimpl
    def rlm_register_environments(self, register: Callable[..., None]) -> None:
        register("fake-cloud", LocalAgentEnvironment)


def rlm(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue() + err.getvalue()


@pytest.fixture
def sandboxes(register_plugin: Callable[[object, str], str]) -> Iterator[list[str]]:
    register_plugin(FakeCloud(), "fake-cloud")
    envs = [LocalAgentEnvironment(tag=tag) for tag in ("red", "red", "blue")]
    for env in envs:
        env.start(Session(subcalls=RecordingSubcalls()))
    try:
        yield [env.active_launcher.sandbox_id for env in envs]  # type: ignore[union-attr]
    finally:
        for env in envs:
            env.close()


def test_lists_then_stops_by_tag_id_and_all(sandboxes: list[str]) -> None:
    status, out = rlm("cleanup", "fake-cloud")
    assert status == 0 and "3 running; stop them with --all" in out
    assert all(sandbox in out for sandbox in sandboxes)

    status, out = rlm("cleanup", "fake-cloud", "--tag", "red")
    assert status == 0 and "2 stopped" in out
    assert f"stopped {sandboxes[0]}" in out and f"stopped {sandboxes[1]}" in out

    status, out = rlm("cleanup", "fake-cloud", "--id", sandboxes[2])
    assert status == 0 and out.endswith("1 stopped\n")
    assert rlm("cleanup", "fake-cloud")[1].startswith("0 running")
    assert rlm("cleanup", "fake-cloud", "--all") == (0, "0 stopped\n")


def test_environments_without_sandboxes_say_so() -> None:
    status, out = rlm("cleanup", "local")
    assert status == 2 and "the local environment starts no sandboxes to clean up" in out
    status, out = rlm("cleanup", "subprocess")
    assert status == 1 and "the subprocess provider cannot list its sandboxes" in out
    status, out = rlm("cleanup", "no-such-env")
    assert status == 2 and "unknown environment 'no-such-env'" in out
