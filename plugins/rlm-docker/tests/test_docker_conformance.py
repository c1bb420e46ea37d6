"""The conformance suite on the ``docker`` environment: the real ``docker`` CLI talking to
podman's Docker-API service, as a Docker user runs it, and the ``podman`` CLI directly."""

from __future__ import annotations

import pytest
from docker_fixtures import EngineUnderTest, docker_engine  # noqa: F401
from rlm_conformance import EnvironmentSetup, EnvironmentTests
from rlm_conformance.fixtures import EnvironmentFixtures
from rlm_conformance.suite import HostDeathTests, LifecycleTests


class TestDockerConformance(EnvironmentTests):
    """Every standard test through ``docker`` and ``DOCKER_HOST``."""

    @pytest.fixture
    def environment_setup(self, docker_engine: EngineUnderTest) -> EnvironmentSetup:  # noqa: F811
        # A label without the per-process tag: one summary line for every test process.
        settings = docker_engine.settings()
        return EnvironmentSetup("docker", settings, label="docker (docker CLI, podman service)")


class TestPodmanConformance(LifecycleTests, HostDeathTests, EnvironmentFixtures):
    """The lifecycle and host-death groups through the ``podman`` CLI (no service in
    between): the same launcher with another client, so the groups that exercise how a
    container starts and ends."""

    @pytest.fixture
    def environment_setup(self, docker_engine: EngineUnderTest) -> EnvironmentSetup:  # noqa: F811
        return EnvironmentSetup(
            "docker", docker_engine.settings(engine="podman"), label="docker (podman CLI)"
        )
