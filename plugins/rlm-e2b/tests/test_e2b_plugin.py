"""Registration, settings, capabilities, the template cache and ``rlm cleanup e2b``."""

from __future__ import annotations

import io
import json

import pytest
from e2b_fake import FakeE2B
from e2b_fixtures import fake_e2b  # noqa: F401  (a fixture)
from rlm_conformance.doubles import RecordingSubcalls, Script, finish
from rlm_conformance.venvs import list_environments
from rlm_e2b.environment import E2BEnvironment
from rlm_e2b.launcher import E2BLauncher

from rlm_core import RLM, ConfigurationError, get_registry
from rlm_core.cli import main
from rlm_core.environments.base import Session
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF

pytestmark = pytest.mark.timeout(120)


def test_registered_under_its_entry_point_name() -> None:
    assert get_registry().environment("e2b").factory is E2BEnvironment


def test_listing_does_not_import_the_sdk() -> None:
    listing = list_environments(["e2b"])
    row = listing.rows["e2b"]
    assert row.distribution == "rlm-e2b" and ISOLATED in row.capabilities
    assert listing.sdks_loaded == []


def test_egress_off_by_default_claims_network_off(fake_e2b: FakeE2B) -> None:  # noqa: F811
    assert NETWORK_OFF in E2BEnvironment().capabilities
    assert NETWORK_OFF not in E2BEnvironment(allow_internet_access=True).capabilities
    for allow in (False, True):
        env = E2BEnvironment(allow_internet_access=allow)
        env.start(Session(subcalls=RecordingSubcalls()))
        try:
            sandbox = fake_e2b.sandboxes[env.active_launcher.sandbox_id]  # type: ignore[union-attr]
            assert sandbox.box.network is allow
        finally:
            env.close()


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"templte": "x"}, "did you mean 'template'"),
        ({"cpu_count": "2"}, "cpu_count must be int | None"),
        ({"allow_internet_access": "no"}, "allow_internet_access must be bool"),
        ({"memory_mb": 64}, "memory_mb must be a finite number >= 128"),
        ({"lease_interval": 0}, "lease_interval must be a finite number >= 1"),
        ({"template": "mine", "cpu_count": 2}, "size the plugin's own template"),
    ],
)
def test_settings_refused_clearly(settings: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigurationError, match=said):
        RLM(backend="scripted", backend_kwargs={"responses": ["x"]}, environment="e2b",
            environment_kwargs=settings)  # fmt: skip


def test_template_built_once(fake_e2b: FakeE2B) -> None:  # noqa: F811
    """The first session builds the template; later ones, in this process or another
    (the in-process memory cleared), find it by name and build nothing."""
    from rlm_e2b import template

    for _ in range(2):
        E2BEnvironment().close()  # never started: nothing built
        rlm = RLM(backend="scripted", backend_kwargs={"responses": Script([finish("ok")])},
                  environment="e2b")  # fmt: skip
        assert rlm.completion("hi").response == "ok"
        template._known.clear()
    assert fake_e2b.builds == 1
    assert fake_e2b.calls.count("GET /templates/aliases/rlm-core-agent-v1") == 2
    assert fake_e2b.live() == []


def test_sizes_select_their_own_template(fake_e2b: FakeE2B) -> None:  # noqa: F811
    env = E2BEnvironment(cpu_count=4, memory_mb=2048)
    env.start(Session(subcalls=RecordingSubcalls()))
    try:
        sandbox = fake_e2b.sandboxes[env.active_launcher.sandbox_id]  # type: ignore[union-attr]
        assert (sandbox.template.name, sandbox.template.cpu_count) == (
            "rlm-core-agent-v1-4cpu-2048mb",
            4,
        )
    finally:
        env.close()


def cli(*args: str) -> str:
    out = io.StringIO()
    assert main(["cleanup", "e2b", *args], stdout=out) == 0
    return out.getvalue()


def test_rlm_cleanup_lists_and_stops_leftovers(fake_e2b: FakeE2B) -> None:  # noqa: F811
    from e2b import Sandbox

    fake_e2b.add_template("plain", python="image")
    labels = [{"rlm-core": "0.1.0", "rlm-session": f"session{i}"} for i in range(3)]
    ours = [Sandbox.create("plain", metadata=label).sandbox_id for label in labels]
    theirs = Sandbox.create("plain", metadata={"owner": "someone else"}).sandbox_id
    assert sorted(E2BLauncher.list_sandboxes() or []) == sorted(ours)
    listing = cli()
    assert all(sandbox in listing for sandbox in ours) and theirs not in listing
    assert "3 running" in listing
    assert cli("--tag", "session1") == f"stopped {ours[1]}\n1 stopped\n"
    assert cli("--id", ours[0]) == f"stopped {ours[0]}\n1 stopped\n"
    assert cli("--all") == f"stopped {ours[2]}\n1 stopped\n"
    assert fake_e2b.live() == [theirs]
    assert json.loads(json.dumps(E2BLauncher.list_sandboxes())) == []
