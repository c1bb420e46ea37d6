"""The image build a first start waits for: its log, its reuse, a failed build, a deadline."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from daytona_fake import FakeDaytona
from daytona_fixtures import fake_daytona, started  # noqa: F401  (a fixture)
from rlm_conformance.probes import wait_until
from rlm_daytona.launcher import client

from rlm_core import SandboxError

pytestmark = pytest.mark.timeout(120)

LAUNCHER_LOG = "rlm_daytona.launcher"
PREFIX = "image build: "

BUILT = ["pending_build", "building_snapshot", "starting", "started"]
"""The states of a sandbox that waited for its image's build."""


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The build's lines as the launcher logged them (one record per chunk the SDK read)."""
    chunks = [
        record.getMessage().removeprefix(PREFIX)
        for record in caplog.records
        if record.name == LAUNCHER_LOG and record.getMessage().startswith(PREFIX)
    ]
    return "\n".join(chunks).splitlines()


def test_first_start_waits_for_the_build_then_it_is_reused(
    fake_daytona: FakeDaytona,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first start of the plugin's image waits through the build and logs its lines at
    DEBUG; a second environment's sandbox starts at once from the built image."""
    caplog.set_level(logging.DEBUG, logger=LAUNCHER_LOG)
    fake_daytona.build_seconds = 2.0
    first = started()
    try:
        sandbox_id = first.active_launcher.sandbox_id  # type: ignore[union-attr]
        sandbox = fake_daytona.sandboxes[sandbox_id]
        [build] = fake_daytona.builds
        assert sandbox.build is build and build.state == "built"
        assert sandbox.states == BUILT
        assert build.log[:2] == [
            "Step 1/2 : FROM python:3.12-slim",
            "Step 2/2 : RUN python -m pip install 'grpcio>=1.60' 'protobuf>=5.26'",
        ]
        assert build.log[2:] == [
            f"Successfully built {build.key[:12]}",
            f"Successfully tagged {build.snapshot_ref}",
        ]
        assert logged(caplog) == build.log
        assert f"GET /api/sandbox/{sandbox_id}/build-logs-url" in fake_daytona.calls
        assert f"GET /sandboxes/{sandbox_id}/build-logs" in fake_daytona.calls
        assert first.execute("import grpc; print('ok')").stdout == "ok\n"

        caplog.clear()
        second = started()
        try:
            other = fake_daytona.sandboxes[second.active_launcher.sandbox_id]  # type: ignore[union-attr]
            assert fake_daytona.builds == [build] and other.build is build
            assert other.states == ["started"] and logged(caplog) == []
            assert second.execute("print(2)").stdout == "2\n"
        finally:
            second.close()
    finally:
        first.close()
    assert fake_daytona.live() == []


def test_builds_are_kept_by_dockerfile(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """Two creates of one new Dockerfile at once wait for the same build; another
    Dockerfile is built on its own; a Dockerfile built before is not built again."""
    from daytona import CreateSandboxFromImageParams

    def create(image: str) -> tuple[str, list[str]]:
        """The new sandbox's id, and the build's lines the SDK passed on."""
        chunks: list[str] = []
        params = CreateSandboxFromImageParams(image=image)
        sandbox = client().create(params, timeout=60, on_snapshot_create_logs=chunks.append)
        return str(sandbox.id), "\n".join(chunks).splitlines()

    fake_daytona.build_seconds = 1.5
    with ThreadPoolExecutor(3) as pool:
        images = ["python:3.12-slim", "python:3.12-slim", "busybox:1.36"]
        (a, a_log), (b, b_log), (c, c_log) = pool.map(create, images)
    builds = {build.build_info["dockerfileContent"]: build for build in fake_daytona.builds}
    slim, busybox = builds["FROM python:3.12-slim\n"], builds["FROM busybox:1.36\n"]
    assert len(fake_daytona.builds) == 2
    assert slim.log[0] == "Step 1/1 : FROM python:3.12-slim" and a_log == b_log == slim.log
    assert busybox.log[0] == "Step 1/1 : FROM busybox:1.36" and c_log == busybox.log

    d, d_log = create("python:3.12-slim")
    assert len(fake_daytona.builds) == 2 and d_log == []
    sandboxes = fake_daytona.sandboxes
    assert [sandboxes[s].build for s in (a, b, c, d)] == [slim, slim, busybox, slim]
    assert [sandboxes[s].states for s in (a, b, c, d)] == [BUILT, BUILT, BUILT, ["started"]]


def test_failed_build(fake_daytona: FakeDaytona, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """A build that fails is a SandboxError with Daytona's reason, its sandbox is deleted,
    and the next start builds the image again."""
    caplog.set_level(logging.DEBUG, logger=LAUNCHER_LOG)
    reason = "pip: no matching distribution found for grpcio>=1.60"
    fake_daytona.build_failure = reason
    with pytest.raises(SandboxError, match=r"entered error state: SandboxState\.BUILD_FAILED") as e:
        started()
    assert f"error reason: {reason}" in str(e.value)
    [failed] = fake_daytona.builds
    assert failed.state == "failed" and failed.log[-1] == f"ERROR: {reason}"
    assert logged(caplog) == failed.log
    assert fake_daytona.live() == [] and list(fake_daytona.ended.values()) == ["deleted"]

    fake_daytona.build_failure = None
    env = started()
    try:
        assert [b.state for b in fake_daytona.builds] == ["failed", "built"]
    finally:
        env.close()
    assert fake_daytona.live() == []


def test_deadline_passes_during_the_build(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """The start's deadline passes while the SDK follows the build: the start fails, the
    sandbox is deleted, and the thread left in the SDK's create call ends too."""
    fake_daytona.build_seconds = 600.0  # never done in this test
    # The SDK's own timeout is the time left plus a margin: the start's deadline reports.
    with pytest.raises(SandboxError, match="did not start in time"):
        started(startup_timeout=3.0)
    assert wait_until(lambda: fake_daytona.live() == [], 10)
    assert list(fake_daytona.ended.values()) == ["deleted"]
    [build] = fake_daytona.builds
    assert build.state == "building"
    assert wait_until(
        lambda: not any(t.name == "rlm-daytona-start" for t in threading.enumerate()), 30
    )
