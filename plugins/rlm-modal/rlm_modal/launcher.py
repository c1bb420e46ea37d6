"""The Modal launcher: the SDK calls that create a sandbox, ship the agent in, exec it.

The start (bounded by the request's deadline, interruptible), termination on every path
and cleanup are the core's :class:`~rlm_core.environments.remote.RemoteLauncher`; the
``modal`` package is imported only when a sandbox is started, listed or ended.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import threading
from dataclasses import dataclass
from typing import Any

from rlm_core.environments.launcher import SANDBOX_LABEL, LaunchRequest
from rlm_core.environments.remote import RemoteLauncher
from rlm_modal.stream import ExecStream

APP_NAME = "rlm-core"
"""The Modal app (in the active Modal environment) that holds every rlm-core sandbox."""

USER_TAG = "rlm-tag"
"""The Modal tag that carries the ``tag`` setting."""

TAG_KEYS = (SANDBOX_LABEL, "rlm-session", "rlm-environment", "rlm-host", USER_TAG)
"""The tags whose values :meth:`ModalLauncher.list_sandboxes` matches a ``tag`` against."""


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox is created with (from the environment's settings)."""

    block_network: bool = True
    image: str | None = None
    python_version: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    region: str | None = None
    lifetime: float = 3600.0
    idle_timeout: float = 60.0
    tag: str | None = None

    def tags(self, request: LaunchRequest) -> dict[str, str]:
        """The sandbox's Modal tags: the request's labels and the ``tag`` setting."""
        tags = dict(request.labels)
        if self.tag is not None:
            tags[USER_TAG] = self.tag
        return tags


def image(spec: SandboxSpec) -> Any:
    """The sandbox image: ``debian_slim`` (or ``spec.image`` from a registry) plus this
    host's own ``grpcio`` and ``protobuf`` versions, the agent's only dependencies. Modal
    builds it once and reuses it while the definition is the same."""
    import modal

    base = (
        modal.Image.from_registry(spec.image)
        if spec.image
        else modal.Image.debian_slim(python_version=spec.python_version)
    )
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("grpcio", "protobuf")]
    return base.pip_install(*pins)


_clients: dict[tuple[str, str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def modal_client() -> Any:
    """A Modal client for the current settings (``MODAL_SERVER_URL``, ``MODAL_TOKEN_ID``,
    ``MODAL_TOKEN_SECRET`` or the active ``~/.modal.toml`` profile), one per distinct
    setting, so a change of them in this process is honoured."""
    import modal
    from modal.config import config

    key = (config.get("server_url"), config.get("token_id"), config.get("token_secret"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            _, token_id, token_secret = key
            if token_id and token_secret:
                client = modal.Client.from_credentials(token_id, token_secret)
            else:
                client = modal.Client.from_env()
            _clients[key] = client
        return client


class ModalLauncher(RemoteLauncher):
    """One agent in one Modal sandbox, reached over the ``stdio`` carrier (binary framing).
    The sandbox's lifetime is bounded by Modal itself (``timeout``, ``idle_timeout``)."""

    provider = "Modal"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__()
        self.spec = spec

    def prepare(self) -> None:
        """Import ``modal`` (so that the core's exit handler runs before the SDK's own)."""
        import modal  # noqa: F401

    def create_sandbox(self, request: LaunchRequest) -> Any:
        """``Sandbox.create`` in the ``rlm-core`` app, with the spec's image, resources,
        egress, lifetimes and the request's labels as tags."""
        import modal

        spec = self.spec
        client = modal_client()
        request.progress("looking up the Modal app")
        app = modal.App.lookup(APP_NAME, create_if_missing=True, client=client)
        request.progress("creating the sandbox (its image is built once, then cached)")
        return modal.Sandbox.create(
            app=app,
            client=client,
            image=image(spec),
            timeout=math.ceil(spec.lifetime),
            idle_timeout=math.ceil(spec.idle_timeout),
            cpu=spec.cpu,
            memory=spec.memory_mb,
            region=spec.region,
            block_network=spec.block_network,
            tags=spec.tags(request),
        )

    def identify(self, sandbox: Any) -> str:
        """The sandbox's ``sb-...`` id."""
        return str(sandbox.object_id)

    def upload(self, sandbox: Any, path: str, data: bytes, request: LaunchRequest) -> None:
        """``filesystem.write_bytes``."""
        sandbox.filesystem.write_bytes(data, path)

    def exec_agent(self, sandbox: Any, argv: list[str], request: LaunchRequest) -> ExecStream:
        """``sandbox.exec(..., text=False)``: stdin and stdout as raw bytes."""
        return ExecStream(sandbox.exec(*argv, text=False))

    def kill_sandbox(self, sandbox: Any) -> None:
        """``sandbox.terminate()``: every process in it ends."""
        sandbox.terminate()

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the running rlm-core sandboxes (those with a tag of value ``tag``, when
        given) in the ``rlm-core`` app of the active Modal environment."""
        import modal

        client = modal_client()
        try:
            app = modal.App.lookup(APP_NAME, client=client)
        except modal.exception.NotFoundError:
            return []
        queries: list[dict[str, str] | None] = (
            [None] if tag is None else [{key: tag} for key in TAG_KEYS]
        )
        found: set[str] = set()
        for tags in queries:
            for sandbox in modal.Sandbox.list(app_id=app.app_id, tags=tags, client=client):
                found.add(sandbox.object_id)
        return sorted(found)

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """Terminate these sandboxes; the ids of those that were found."""
        import modal

        client = modal_client()
        stopped: list[str] = []
        for sandbox_id in ids:
            with contextlib.suppress(modal.exception.NotFoundError):
                modal.Sandbox.from_id(sandbox_id, client=client).terminate()
                stopped.append(sandbox_id)
        return stopped
