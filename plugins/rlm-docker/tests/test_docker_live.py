"""The conformance suite on a real Docker daemon, with an image built from the stock
``python:3.11-slim`` (plus this host's ``grpcio`` and ``protobuf`` versions). Runs only when
``docker info`` answers and the daemon is Docker's (not the tests' Podman service); skipped,
saying so, otherwise."""

from __future__ import annotations

import importlib.metadata
import subprocess
import tempfile
from pathlib import Path

import pytest
from rlm_conformance import EnvironmentSetup, EnvironmentTests

pytestmark = pytest.mark.live

LIVE_IMAGE = "rlm-docker-live:py311"

DOCKERFILE = """FROM python:3.11-slim
RUN pip install --no-cache-dir {pins}
"""


def live_reason() -> str | None:
    """Why the live tests cannot run here (``None`` when they can)."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.OperatingSystem}}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"live Docker tests need a Docker daemon: {exc}"
    if info.returncode != 0:
        return "live Docker tests need a Docker daemon (docker info failed)"
    if "podman" in info.stdout.lower():
        return "docker talks to Podman here, not to a Docker daemon"
    return None


def build_live_image() -> str:
    """``python:3.11-slim`` with the host's grpcio and protobuf (built once per daemon)."""
    pins = " ".join(f"{n}=={importlib.metadata.version(n)}" for n in ("grpcio", "protobuf"))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "Dockerfile").write_text(DOCKERFILE.format(pins=pins))
        subprocess.run(
            ["docker", "build", "--quiet", "-t", LIVE_IMAGE, folder],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
    return LIVE_IMAGE


class TestDockerLive(EnvironmentTests):
    """Every standard test on a real Docker daemon."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        reason = live_reason()
        if reason is not None:
            pytest.skip(reason)
        settings = {"image": build_live_image(), "pull": "never"}
        return EnvironmentSetup("docker", settings, label="docker (live)")
