"""Registration, settings, capabilities, what the create call asks for, ``rlm cleanup daytona``."""

from __future__ import annotations

import io
import threading

import pytest
from daytona_fake import FakeDaytona
from daytona_fixtures import QUICK, fake_daytona, started  # noqa: F401  (a fixture)
from rlm_conformance.doubles import Script, finish
from rlm_conformance.probes import wait_until
from rlm_conformance.venvs import list_environments
from rlm_daytona.environment import DaytonaEnvironment
from rlm_daytona.launcher import DaytonaLauncher, client

from rlm_core import RLM, ConfigurationError, get_registry
from rlm_core.cli import main
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF

pytestmark = pytest.mark.timeout(120)


def test_registered_under_its_entry_point_name() -> None:
    assert get_registry().environment("daytona").factory is DaytonaEnvironment


def test_listing_does_not_import_the_sdk() -> None:
    listing = list_environments(["daytona", "daytona_api_client", "daytona_toolbox_api_client"])
    row = listing.rows["daytona"]
    assert row.distribution == "rlm-daytona" and ISOLATED in row.capabilities
    assert listing.sdks_loaded == []


SDK_THREADS = ("rlm-daytona", "_background_receive", "_background_keepalive_ping")
"""Names (or parts of them) of the threads a session's carrier runs on: ours and httpx-ws's."""


@pytest.mark.parametrize("mode", ["pty", "session"])
def test_no_thread_outlives_close(fake_daytona: FakeDaytona, mode: str) -> None:  # noqa: F811
    """close() ends the carrier's threads, the follower blocked on the WebSocket too."""

    earlier = set(threading.enumerate())  # an earlier test's start may still be ending

    def carrier_threads() -> list[str]:
        names = [t.name for t in threading.enumerate() if t not in earlier]
        return [name for name in names if any(part in name for part in SDK_THREADS)]

    env = started(exec_mode=mode)
    assert env.execute("print(1)").stdout == "1\n"
    assert carrier_threads() != []
    env.close()
    assert wait_until(lambda: carrier_threads() == [], 10), carrier_threads()


def test_egress_blocked_by_default_claims_network_off(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    assert NETWORK_OFF in DaytonaEnvironment().capabilities
    assert NETWORK_OFF not in DaytonaEnvironment(network_block_all=False).capabilities
    for block in (True, False):
        env = started(network_block_all=block)
        try:
            sandbox = fake_daytona.sandboxes[env.active_launcher.sandbox_id]  # type: ignore[union-attr]
            assert sandbox.box.network is not block
            assert fake_daytona.bodies[-1]["networkBlockAll"] is block
        finally:
            env.close()


def test_what_the_create_call_asks_for(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """Labels, an ephemeral auto-stopping sandbox, the plugin's image, its size, egress."""
    env = started(
        cpu=2, memory_gb=4, network_block_all=False, network_allow_list="10.0.0.0/8", env={"A": "1"}
    )
    try:
        body = fake_daytona.bodies[-1]
        labels = body["labels"]
        assert labels["rlm-core"] and labels["rlm-environment"] == "daytona"
        assert (body["autoStopInterval"], body["autoDeleteInterval"]) == (1, 0)
        assert "ttlMinutes" not in body  # no max_lifetime: no absolute bound asked for
        assert (body["cpu"], body["memory"], body["env"]) == (2, 4, {"A": "1"})
        assert body["networkAllowList"] == "10.0.0.0/8"
        dockerfile = body["buildInfo"]["dockerfileContent"]
        assert dockerfile.startswith("FROM python:3.12-slim")
        assert "grpcio" in dockerfile and "protobuf" in dockerfile
        assert env.execute("import os; print(os.environ['A'])").stdout == "1\n"
    finally:
        env.close()


def test_snapshot(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    fake_daytona.snapshots["rlm-agent"] = "image"
    settings = {**QUICK, "snapshot": "rlm-agent"}
    rlm = RLM(backend="scripted", backend_kwargs={"responses": Script([finish("ok")])},
              environment="daytona", environment_kwargs=settings)  # fmt: skip
    try:
        assert rlm.completion("hi").response == "ok"
    finally:
        rlm.close()
    assert fake_daytona.bodies[-1]["snapshot"] == "rlm-agent"
    assert "buildInfo" not in fake_daytona.bodies[-1]
    assert fake_daytona.live() == []


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"snapshto": "x"}, "did you mean 'snapshot'"),
        ({"cpu": "2"}, "cpu must be int | None"),
        ({"network_block_all": "no"}, "network_block_all must be bool"),
        ({"memory_gb": 0}, "memory_gb must be a finite number >= 1"),
        ({"auto_stop_minutes": 0}, "auto_stop_minutes must be a finite number >= 1"),
        ({"lease_interval": 0}, "lease_interval must be a finite number > 0"),
        ({"lease_interval": 45}, "at most half of auto_stop_minutes"),
        ({"exec_mode": "ssh"}, "exec_mode must be 'pty' or 'session'"),
        ({"image": "a", "snapshot": "b"}, "an image or a snapshot, not both"),
        ({"snapshot": "mine", "cpu": 2}, "that snapshot's size"),
        ({"network_allow_list": "10.0.0.0/8"}, "needs network_block_all=False"),
    ],
)
def test_settings_refused_clearly(settings: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigurationError, match=said):
        RLM(backend="scripted", backend_kwargs={"responses": ["x"]}, environment="daytona",
            environment_kwargs=settings)  # fmt: skip


def test_socketio_is_tolerated(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """The SDK's event stream is refused (404): it falls back to polling, and one client
    serves every call of the process."""
    env = started()
    env.close()
    assert client() is client()
    assert fake_daytona.calls.count("GET /api/socket.io/") >= 1
    assert fake_daytona.live() == []


def cli(*args: str) -> str:
    out = io.StringIO()
    assert main(["cleanup", "daytona", *args], stdout=out) == 0
    return out.getvalue()


def test_rlm_cleanup_lists_and_stops_leftovers(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    from daytona import CreateSandboxFromSnapshotParams

    fake_daytona.snapshots["plain"] = "image"

    def create(labels: dict[str, str]) -> str:
        params = CreateSandboxFromSnapshotParams(snapshot="plain", labels=labels)
        return str(client().create(params).id)

    ours = [create({"rlm-core": "0.1.0", "rlm-session": f"session{i}"}) for i in range(3)]
    theirs = create({"owner": "someone else"})
    assert sorted(DaytonaLauncher.list_sandboxes() or []) == sorted(ours)
    listing = cli()
    assert all(sandbox in listing for sandbox in ours) and theirs not in listing
    assert "3 running" in listing
    assert cli("--tag", "session1") == f"stopped {ours[1]}\n1 stopped\n"
    assert cli("--id", ours[0]) == f"stopped {ours[0]}\n1 stopped\n"
    assert cli("--all") == f"stopped {ours[2]}\n1 stopped\n"
    assert fake_daytona.live() == [theirs]
    assert DaytonaLauncher.list_sandboxes() == []
