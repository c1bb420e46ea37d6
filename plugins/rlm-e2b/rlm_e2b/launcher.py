"""The E2B launcher: the SDK calls that create a sandbox, upload the agent, run it, end it.

Everything else is the core's :class:`~rlm_core.environments.remote.RemoteLauncher`. The
sandbox is never left to bill: it is created with a short E2B ``timeout`` that the core's
lease extends while this host lives (so a host killed by SIGKILL loses its sandbox within
the lease), it is killed on ``close()``, on every failed start and at interpreter exit, and
``rlm cleanup e2b`` finds leftovers by their ``rlm-core`` metadata. ``e2b`` is imported
only when a sandbox is started, listed or ended.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from rlm_core.environments.launcher import SANDBOX_LABEL, LaunchRequest
from rlm_core.environments.remote import RemoteLauncher
from rlm_e2b.stream import CommandStream


@dataclass(frozen=True)
class E2BOptions:
    """The ``e2b`` environment's own settings (see :class:`~rlm_e2b.environment.E2BEnvironment`)."""

    template: str | None = None
    cpu_count: int | None = None
    memory_mb: int | None = None
    allow_internet_access: bool = False
    lease_interval: float = 30.0
    env: dict[str, str] = field(default_factory=dict)


class E2BLauncher(RemoteLauncher):
    """Starts one agent in a new E2B sandbox and connects to it over ``stdio`` (base64
    framing: the SDK decodes stdout as text). The sandbox's short E2B ``timeout`` is
    renewed by the core's lease while this host lives."""

    provider = "E2B"
    framing = "base64"

    def __init__(self, options: E2BOptions | None = None) -> None:
        self.options = options or E2BOptions()
        super().__init__(lease_interval=self.options.lease_interval)

    def prepare(self) -> None:
        """Import ``e2b`` (so that the core's exit handler runs before the SDK's own)."""
        import e2b  # noqa: F401

    def create_sandbox(self, request: LaunchRequest) -> Any:
        """``Sandbox.create`` from the template (built once, see
        :func:`~rlm_e2b.template.ensure_template`), with the session's labels as metadata
        and a lifetime of one lease."""
        from e2b import Sandbox

        from rlm_e2b.template import ensure_template

        options = self.options
        template = options.template or ensure_template(
            options.cpu_count, options.memory_mb, request.progress
        )
        request.progress(f"creating an E2B sandbox from the template {template}")
        return Sandbox.create(
            template=template,
            timeout=self.lease_seconds(),
            metadata=request.labels,
            allow_internet_access=options.allow_internet_access,
            request_timeout=request.call_timeout(),
        )

    def identify(self, sandbox: Any) -> str:
        """The E2B sandbox id."""
        return str(sandbox.sandbox_id)

    def upload(self, sandbox: Any, path: str, data: bytes, request: LaunchRequest) -> None:
        """``files.write`` as an octet stream."""
        sandbox.files.write(
            path, data, request_timeout=request.call_timeout(), use_octet_stream=True
        )

    def exec_agent(self, sandbox: Any, argv: list[str], request: LaunchRequest) -> CommandStream:
        """``commands.run`` in the background with stdin open and no command timeout."""
        # exec: bash (E2B runs commands through `bash -l -c`) becomes the agent.
        handle = sandbox.commands.run(
            "exec " + shlex.join(argv),
            background=True,
            stdin=True,
            timeout=0,
            envs=self.options.env or None,
            request_timeout=request.call_timeout(),
        )
        return CommandStream(sandbox.commands, handle)

    def kill_sandbox(self, sandbox: Any) -> None:
        """``sandbox.kill()``."""
        sandbox.kill()

    def renew_sandbox(self, sandbox: Any, seconds: int) -> None:
        """``sandbox.set_timeout``: the sandbox now ends ``seconds`` from now."""
        sandbox.set_timeout(seconds)

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the running or paused E2B sandboxes that rlm-core started (metadata key
        ``rlm-core``), with ``tag`` among their metadata values when given."""
        return [info.sandbox_id for info in _listed(tag)]

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """Kill these sandboxes; the ids of those that were still there."""
        from e2b import Sandbox

        return [sandbox_id for sandbox_id in ids if Sandbox.kill(sandbox_id)]


def _listed(tag: str | None, metadata: dict[str, str] | None = None) -> list[Any]:
    """The SDK's infos of rlm-core's sandboxes (every page) with ``metadata`` (filtered
    by the service) and carrying ``tag`` among their metadata values (filtered here)."""
    from e2b import Sandbox, SandboxQuery

    paginator = Sandbox.list(query=SandboxQuery(metadata=metadata) if metadata else None)
    found = []
    while paginator.has_next:
        for info in paginator.next_items():
            labels = info.metadata or {}
            if SANDBOX_LABEL in labels and (tag is None or tag in labels.values()):
                found.append(info)
    return found
