"""Registration, settings, capabilities, labels, the image cache and ``rlm cleanup prime``."""

from __future__ import annotations

import io

import pytest
from prime_fake import FakePrime
from prime_fixtures import fake_prime  # noqa: F401  (a fixture)
from rlm_conformance.doubles import RecordingSubcalls, Script, finish
from rlm_conformance.venvs import list_environments
from rlm_prime.environment import PrimeEnvironment
from rlm_prime.launcher import PrimeLauncher, decode_labels, encode_labels

from rlm_core import RLM, ConfigurationError, get_registry
from rlm_core.cli import main
from rlm_core.environments.base import Session
from rlm_core.vocabulary import ISOLATED, NETWORK_OFF

pytestmark = pytest.mark.timeout(120)


def test_registered_under_its_entry_point_name() -> None:
    assert get_registry().environment("prime").factory is PrimeEnvironment


def test_listing_does_not_import_the_sdk() -> None:
    listing = list_environments(["prime_sandboxes"])
    row = listing.rows["prime"]
    assert row.distribution == "rlm-prime" and {ISOLATED, NETWORK_OFF} <= row.capabilities
    assert listing.sdks_loaded == []


def started(env: PrimeEnvironment, fake: FakePrime) -> dict[str, object]:
    """Start ``env``; the create request the fake received; close it."""
    env.start(Session(subcalls=RecordingSubcalls()))
    try:
        sandbox = fake.sandboxes[env.active_launcher.sandbox_id]  # type: ignore[index,union-attr]
        return {**sandbox.request, "network": sandbox.box.network}
    finally:
        env.close()


def test_egress_off_by_default_claims_network_off(fake_prime: FakePrime) -> None:  # noqa: F811
    closed = PrimeEnvironment()
    assert NETWORK_OFF in closed.capabilities
    request = started(closed, fake_prime)
    assert request["network_allowlist"] == [] and request["network"] is False
    assert request["vm"] is True
    opened = PrimeEnvironment(allow_internet_access=True)
    assert NETWORK_OFF not in opened.capabilities
    request = started(opened, fake_prime)
    assert "network_allowlist" not in request and request["network"] is True
    listed = PrimeEnvironment(network_allowlist=["pypi.org", "10.0.0.0/8"])
    assert NETWORK_OFF not in listed.capabilities
    assert started(listed, fake_prime)["network_allowlist"] == ["pypi.org", "10.0.0.0/8"]
    assert fake_prime.live() == []


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"docker_imag": "x"}, "did you mean 'docker_image'"),
        ({"cpu_cores": "2"}, "cpu_cores must be float"),
        ({"allow_internet_access": "no"}, "allow_internet_access must be bool"),
        ({"memory_gb": 0}, "memory_gb must be a finite number > 0"),
        ({"idle_timeout_minutes": 0}, "idle_timeout_minutes must be a finite number >= 1"),
        ({"max_lifetime": 90000}, "at most 86400 seconds"),
        ({"network_allowlist": ["user@x.org"]}, "credentials are not supported"),
        ({"allow_internet_access": True, "network_allowlist": []}, "set one of them"),
    ],
)
def test_settings_refused_clearly(settings: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigurationError, match=said):
        RLM(backend="scripted", backend_kwargs={"responses": ["x"]}, environment="prime",
            environment_kwargs=settings)  # fmt: skip


def test_lifetimes_and_labels(fake_prime: FakePrime) -> None:  # noqa: F811
    env = PrimeEnvironment(max_lifetime=61, idle_timeout_minutes=7, tag="nightly")
    request = started(env, fake_prime)
    assert (request["timeout_minutes"], request["idle_timeout_minutes"]) == (2, 2)
    labels = decode_labels(request["labels"])  # type: ignore[arg-type]
    assert labels["rlm-environment"] == "prime" and labels["rlm-tag"] == "nightly"
    assert set(labels) == {"rlm-core", "rlm-session", "rlm-environment", "rlm-host", "rlm-tag"}
    assert decode_labels(encode_labels({"a": "b=c", "d": ""})) == {"a": "b=c", "d": ""}
    request = started(PrimeEnvironment(), fake_prime)
    assert (request["timeout_minutes"], request["idle_timeout_minutes"]) == (60, 5)


def test_image_built_once(fake_prime: FakePrime) -> None:  # noqa: F811
    """The first session builds the image; later ones, in this process or another (the
    in-process memory cleared), find it by name and build nothing."""
    from rlm_prime import image

    for _ in range(2):
        PrimeEnvironment().close()  # never started: nothing built
        rlm = RLM(backend="scripted", backend_kwargs={"responses": Script([finish("ok")])},
                  environment="prime")  # fmt: skip
        assert rlm.completion("hi").response == "ok"
        rlm.close()
        image._known.clear()
    assert fake_prime.builds == 1
    assert fake_prime.calls.count("GET /api/v1/images") == 3  # the build's check, then two
    created = [s.request["docker_image"] for s in fake_prime.ended.values()]
    assert created == ["fake-user/rlm-core-agent:v1"] * 2
    assert fake_prime.live() == []


def cli(*args: str) -> str:
    out = io.StringIO()
    assert main(["cleanup", "prime", *args], stdout=out) == 0
    return out.getvalue()


def test_rlm_cleanup_lists_and_stops_leftovers(fake_prime: FakePrime) -> None:  # noqa: F811
    from prime_sandboxes import APIClient, CreateSandboxRequest, SandboxClient

    client = SandboxClient(APIClient())

    def create(labels: dict[str, str]) -> str:
        request = CreateSandboxRequest(
            name="left", docker_image="python:3.12-slim", labels=encode_labels(labels)
        )
        return str(client.create(request).id)

    ours = [create({"rlm-core": "0.1.0", "rlm-session": f"session{i}"}) for i in range(3)]
    theirs = create({"owner": "someone else"})
    assert sorted(PrimeLauncher.list_sandboxes() or []) == sorted(ours)
    listing = cli()
    assert all(sandbox in listing for sandbox in ours) and theirs not in listing
    assert "3 running" in listing
    assert cli("--tag", "session1") == f"stopped {ours[1]}\n1 stopped\n"
    assert cli("--id", ours[0]) == f"stopped {ours[0]}\n1 stopped\n"
    assert cli("--all") == f"stopped {ours[2]}\n1 stopped\n"
    assert fake_prime.live() == [theirs]
    assert PrimeLauncher.list_sandboxes() == []
    assert PrimeLauncher.kill_sandbox_ids([ours[0]]) == []
