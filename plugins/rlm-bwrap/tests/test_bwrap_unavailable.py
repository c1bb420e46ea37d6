"""A clear, typed error when bubblewrap cannot run: no binary, no user namespaces."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from bwrap_support import start
from rlm_bwrap import BwrapUnavailableError

from rlm_core import RLM
from rlm_core.exceptions import SandboxError

pytestmark = pytest.mark.timeout(60)

# What bubblewrap says where the kernel refuses unprivileged user namespaces.
NO_USERNS = (
    "bwrap: No permissions to creating new namespace, likely because the kernel does not "
    "allow non-privileged user namespaces. On e.g. debian this can be enabled with "
    "'sysctl kernel.unprivileged_userns_clone=1'."
)


def test_a_missing_binary_is_a_typed_error() -> None:
    with pytest.raises(BwrapUnavailableError) as caught:
        start(bwrap="/nonexistent/bin/bwrap")
    assert isinstance(caught.value, SandboxError)
    message = str(caught.value)
    assert "'/nonexistent/bin/bwrap' was not found" in message
    assert "apt-get install bubblewrap" in message


def test_a_missing_binary_on_path_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", tempfile.mkdtemp(prefix="rlm-bwrap-empty-path-"))
    try:
        with pytest.raises(BwrapUnavailableError, match="'bwrap' was not found"):
            start()
    finally:
        os.rmdir(os.environ["PATH"])


def test_disabled_user_namespaces_are_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho {NO_USERNS!r} >&2\nexit 1\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    rlm = RLM(backend="scripted", backend_kwargs={"responses": ["unused"]}, environment="bwrap")
    with pytest.raises(BwrapUnavailableError) as caught:
        rlm.completion("a question")
    message = str(caught.value)
    assert str(fake) in message and "No permissions to creating new namespace" in message
    assert "unprivileged user namespaces" in message
