"""The Daytona launcher: the SDK calls that create a sandbox, upload the agent, run it, end it.

Everything else is the core's :class:`~rlm_core.environments.remote.RemoteLauncher`. The
sandbox is never left to bill: it is ephemeral (deleted when it stops) and stops after
``auto_stop_minutes`` without activity, which the core's lease keeps up with
``refresh_activity`` while this host lives (so a host killed by SIGKILL loses its sandbox
within that); ``max_lifetime`` becomes its ``ttl_minutes``, an absolute bound; it is deleted
on ``close()``, on every failed start and at interpreter exit; and ``rlm cleanup daytona``
finds leftovers by their ``rlm-core`` label. ``daytona`` is imported only when a sandbox is
started, listed or ended.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from rlm_core.environments.launcher import SANDBOX_LABEL, LaunchRequest
from rlm_core.environments.remote import PushExec, RemoteLauncher
from rlm_daytona.stream import PtyExec, SessionExec

log = logging.getLogger(__name__)

ExecMode = Literal["pty", "session"]

ENVIRONMENT_KEYS = (
    "DAYTONA_API_URL",
    "DAYTONA_API_KEY",
    "DAYTONA_JWT_TOKEN",
    "DAYTONA_ORGANIZATION_ID",
    "DAYTONA_TARGET",
)
"""The SDK's settings in the process environment (a client is kept per combination)."""


@dataclass(frozen=True)
class DaytonaOptions:
    """The ``daytona`` environment's own settings (see
    :class:`~rlm_daytona.environment.DaytonaEnvironment`)."""

    image: str | None = None
    snapshot: str | None = None
    cpu: int | None = None
    memory_gb: int | None = None
    network_block_all: bool = True
    network_allow_list: str | None = None
    exec_mode: ExecMode = "pty"
    auto_stop_minutes: int = 1
    lease_interval: float = 15.0
    env: dict[str, str] = field(default_factory=dict)
    target: str | None = None


_clients: dict[tuple[str | None, ...], Any] = {}
_clients_lock = threading.Lock()


def client() -> Any:
    """The process's ``daytona.Daytona`` client for the current ``DAYTONA_*`` settings."""
    from daytona import Daytona

    key = tuple(os.environ.get(name) for name in ENVIRONMENT_KEYS)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Daytona()
        return _clients[key]


class DaytonaLauncher(RemoteLauncher):
    """Starts one agent in a new Daytona sandbox and connects to it over ``stdio``: a PTY
    session (binary) or a session command (base64), per ``exec_mode``."""

    provider = "Daytona"

    def __init__(self, options: DaytonaOptions | None = None) -> None:
        self.options = options or DaytonaOptions()
        super().__init__(lease_interval=self.options.lease_interval)
        self.framing = "binary" if self.options.exec_mode == "pty" else "base64"

    def prepare(self) -> None:
        """Import ``daytona`` (so that the core's exit handler runs before the SDK's own)."""
        import daytona  # noqa: F401

    def create_sandbox(self, request: LaunchRequest) -> Any:
        """``Daytona.create``: ephemeral, auto-stopping, with the session's labels, from the
        snapshot, the image or the plugin's own image (:func:`~rlm_daytona.image.agent_image`).
        (A create call that fails once the sandbox exists: the core finds it by label.)"""
        from daytona import (
            CreateSandboxFromImageParams,
            CreateSandboxFromSnapshotParams,
            Resources,
        )

        from rlm_daytona.image import agent_image

        o = self.options
        lifetime = request.max_lifetime
        common: dict[str, Any] = {
            "labels": dict(request.labels),
            "env_vars": dict(o.env) or None,
            "auto_stop_interval": o.auto_stop_minutes,
            "ephemeral": True,
            "ttl_minutes": None if lifetime is None else max(1, math.ceil(lifetime / 60)),
            "network_block_all": o.network_block_all,
            "network_allow_list": o.network_allow_list,
            "target": o.target,
        }
        params: Any
        if o.snapshot is not None:
            params = CreateSandboxFromSnapshotParams(snapshot=o.snapshot, **common)
        else:
            sized = o.cpu is not None or o.memory_gb is not None
            params = CreateSandboxFromImageParams(
                image=o.image or agent_image(),
                resources=Resources(cpu=o.cpu, memory=o.memory_gb) if sized else None,
                **common,
            )
        return client().create(
            params,
            timeout=request.call_timeout(),
            on_snapshot_create_logs=lambda line: log.debug("image build: %s", line),
        )

    def identify(self, sandbox: Any) -> str:
        """The Daytona sandbox id."""
        return str(sandbox.id)

    def upload(self, sandbox: Any, path: str, data: bytes, request: LaunchRequest) -> None:
        """``fs.upload_file`` (the toolbox's multipart upload)."""
        sandbox.fs.upload_file(data, path, timeout=math.ceil(request.call_timeout()))

    def exec_agent(self, sandbox: Any, argv: list[str], request: LaunchRequest) -> PushExec:
        """Run ``argv`` in a PTY session or as a session command (``exec_mode``)."""
        kind = PtyExec if self.options.exec_mode == "pty" else SessionExec
        name = f"rlm-agent-{request.session_id}"
        return kind.start(sandbox, argv, name, self.options.env, request.call_timeout())

    def kill_sandbox(self, sandbox: Any) -> None:
        """``sandbox.delete()``."""
        sandbox.delete(timeout=30)

    def renew_sandbox(self, sandbox: Any, seconds: int) -> None:
        """``refresh_activity``: the auto-stop interval starts again from now."""
        sandbox.refresh_activity(request_timeout=30)

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the Daytona sandboxes that rlm-core started (label ``rlm-core``) and that
        are not being destroyed, with ``tag`` among their label values when given."""
        found = []
        for sandbox in client().list():
            labels = sandbox.labels or {}
            state = str(getattr(sandbox.state, "value", sandbox.state))
            if SANDBOX_LABEL not in labels or state in ("destroyed", "destroying"):
                continue
            if tag is None or tag in labels.values():
                found.append(str(sandbox.id))
        return found

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """Delete these sandboxes; the ids of those that were still there."""
        from daytona import DaytonaNotFoundError

        ended = []
        for sandbox_id in ids:
            try:
                client().get(sandbox_id).delete(timeout=30)
            except DaytonaNotFoundError:
                continue
            ended.append(sandbox_id)
        return ended
