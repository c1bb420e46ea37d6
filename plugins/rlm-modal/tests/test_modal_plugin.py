"""Settings, capabilities, registration, listing and clean-up, the image cache, stdin writes."""

from __future__ import annotations

import io

import pytest
from modal_fake import ModalFake
from modal_fixtures import modal_fake  # noqa: F401
from modal_proto import api_pb2
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.venvs import list_environments
from rlm_modal import ModalEnvironment
from rlm_modal.launcher import ModalLauncher
from rlm_modal.stream import MAX_WRITE

from rlm_core import RLM, ConfigurationError
from rlm_core.cli import main
from rlm_core.environments.base import NETWORK_OFF, Session

pytestmark = pytest.mark.timeout(120)

BLOCKED = api_pb2.NetworkAccess.NetworkAccessType.BLOCKED
OPEN = api_pb2.NetworkAccess.NetworkAccessType.OPEN


def started(**settings: object) -> ModalEnvironment:
    env = ModalEnvironment(**{"idle_timeout": 2, **settings})
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"block_netwrok": False}, ["unknown setting 'block_netwrok'", "did you mean"]),
        ({"cpu": "2"}, ["cpu", "str"]),
        ({"memory_mb": 0}, ["memory_mb", ">= 1"]),
        ({"block_network": "no"}, ["block_network", "bool"]),
        ({"idle_timeout": 0}, ["idle_timeout", ">= 1"]),
        ({"max_lifetime": 100_000}, ["max_lifetime", "at most 86400"]),
    ],
)
def test_settings_are_refused_clearly(settings: dict[str, object], words: list[str]) -> None:
    for build in (
        lambda: ModalEnvironment(**settings),
        lambda: RLM(
            backend="scripted",
            backend_kwargs={"responses": ["unused"]},
            environment="modal",
            environment_kwargs=settings,
        ),
    ):
        with pytest.raises(ConfigurationError) as caught:
            build()
        assert all(word in str(caught.value) for word in words), str(caught.value)


def test_egress_setting_and_capability(modal_fake: ModalFake) -> None:  # noqa: F811
    assert NETWORK_OFF in ModalEnvironment().capabilities
    assert NETWORK_OFF not in ModalEnvironment(block_network=False).capabilities
    for block, access, network in ((True, BLOCKED, False), (False, OPEN, True)):
        env = started(block_network=block)
        try:
            sandbox_id = env.active_launcher.sandbox_id  # type: ignore[union-attr]
            assert sandbox_id is not None
            record = modal_fake.record(sandbox_id)
            assert record.definition.network_access.network_access_type == access
            assert record.box.network is network
        finally:
            env.close()


def test_sandbox_definition_and_tags(modal_fake: ModalFake) -> None:  # noqa: F811
    env = started(cpu=0.5, memory_mb=768, region="eu-west", tag="nightly", max_lifetime=600)
    try:
        launcher = env.active_launcher
        assert isinstance(launcher, ModalLauncher) and launcher.sandbox_id is not None
        record = modal_fake.record(launcher.sandbox_id)
        definition = record.definition
        assert definition.resources.milli_cpu == 500 and definition.resources.memory_mb == 768
        assert list(definition.scheduler_placement.regions) == ["eu-west"]
        assert (definition.timeout_secs, definition.idle_timeout_secs) == (600, 2)
        assert record.tags["rlm-tag"] == "nightly" and record.tags["rlm-environment"] == "modal"
        assert {"rlm-core", "rlm-session", "rlm-host"} <= set(record.tags)
        assert ModalLauncher.list_sandboxes(tag="nightly") == [launcher.sandbox_id]
        session = record.tags["rlm-session"]
        assert ModalLauncher.list_sandboxes(tag=session) == [launcher.sandbox_id]
    finally:
        env.close()
    assert ModalLauncher.list_sandboxes(tag="nightly") == []


def test_second_session_reuses_the_image(modal_fake: ModalFake) -> None:  # noqa: F811
    started().close()
    builds = modal_fake.image_builds
    started().close()
    assert modal_fake.image_builds == builds
    assert modal_fake.calls.count("ImageGetOrCreate") >= 2  # asked, and found it built
    started(python_version="3.12").close()  # another definition is built once
    assert modal_fake.image_builds == builds + 2


def test_large_stdin_writes_are_bounded(modal_fake: ModalFake) -> None:  # noqa: F811
    env = started()
    try:
        env.load_context("x" * (12 * 1024 * 1024), 0)
        assert env.execute("print(len(context))").stdout == f"{12 * 1024 * 1024}\n"
    finally:
        env.close()
    assert 0 < modal_fake.max_stdin_write <= MAX_WRITE


def rlm_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue() + err.getvalue()


def test_rlm_cleanup_lists_and_stops_leftovers(modal_fake: ModalFake) -> None:  # noqa: F811
    envs = [started(tag=tag) for tag in ("red", "red", "blue")]
    try:
        ids = [env.active_launcher.sandbox_id for env in envs]  # type: ignore[union-attr]
        status, out = rlm_cli("cleanup", "modal")
        assert status == 0 and all(f"{i}\n" in out for i in ids), out
        status, out = rlm_cli("cleanup", "modal", "--tag", "red")
        assert status == 0 and out.endswith("2 stopped\n"), out
        assert set(modal_fake.live()) & set(ids) == {ids[2]}
        status, out = rlm_cli("cleanup", "modal", "--id", str(ids[2]))
        assert status == 0 and out == f"stopped {ids[2]}\n1 stopped\n"
        assert not set(modal_fake.live()) & set(ids)
        assert rlm_cli("cleanup", "modal", "--all") == (0, "0 stopped\n")
    finally:
        for env in envs:
            env.close()


def test_listing_environments_does_not_import_the_sdk() -> None:
    listing = list_environments(["modal"])
    row = listing.rows["modal"]
    assert row.distribution == "rlm-modal" and {"isolated", "timeout"} <= row.capabilities
    assert listing.sdks_loaded == []
