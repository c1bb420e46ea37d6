"""The E2B launcher: create the sandbox, upload the agent, run it over ``stdio``, stop it.

Everything here is calls of the ``e2b`` SDK, imported only when a sandbox is started,
listed or cleaned up. The sandbox is never left to bill: it is created with a short E2B
``timeout`` that a :class:`~rlm_core.environments.lease.Lease` extends while this host lives
(so a host killed by SIGKILL loses its sandbox within the lease), it is killed on
``close()``, on every failed start and at interpreter exit, and ``rlm cleanup e2b`` finds
leftovers by their ``rlm-core`` metadata.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlm_core.bridge.carriers import Connection, Stdio
from rlm_core.environments.launcher import (
    SANDBOX_LABEL,
    Launcher,
    LaunchRequest,
    terminate_at_exit,
    terminated_before_exit,
)
from rlm_core.environments.lease import Lease
from rlm_core.environments.shipping import agent_bundle
from rlm_e2b.stream import CommandStream

log = logging.getLogger(__name__)

AGENT_DIR = "/tmp"
"""Where the agent bundle is uploaded in the sandbox."""


@dataclass(frozen=True)
class E2BOptions:
    """The ``e2b`` environment's own settings (see :class:`~rlm_e2b.environment.E2BEnvironment`)."""

    template: str | None = None
    cpu_count: int | None = None
    memory_mb: int | None = None
    allow_internet_access: bool = False
    lease_interval: float = 30.0
    env: dict[str, str] = field(default_factory=dict)


class E2BLauncher(Launcher):
    """Starts one agent in a new E2B sandbox and connects to it over ``stdio``."""

    def __init__(self, options: E2BOptions | None = None) -> None:
        self.options = options or E2BOptions()
        self._sandbox: Any = None
        self._stream: CommandStream | None = None
        self._lease: Lease | None = None
        self._session: str | None = None
        self._max_lifetime: float | None = None
        self._created_at = 0.0

    # -- the contract ---------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Connection:
        """Create the sandbox (with the session's labels as metadata and a short timeout),
        upload the agent bundle, and run it with ``--stdio --framing base64``."""
        from e2b import Sandbox

        from rlm_e2b.template import ensure_template

        options = self.options
        template = options.template or ensure_template(
            options.cpu_count, options.memory_mb, request.progress
        )
        self._max_lifetime = request.max_lifetime
        self._session = request.session_id  # from here on, terminate() looks for it
        terminate_at_exit(self)
        request.progress(f"creating an E2B sandbox from the template {template}")
        self._created_at = time.monotonic()
        self._sandbox = sandbox = Sandbox.create(
            template=template,
            timeout=self._lease_seconds(),
            metadata=request.labels,
            allow_internet_access=options.allow_internet_access,
            request_timeout=self._timeout(request),
        )
        self._lease = Lease(
            self._renew, options.lease_interval, name=f"E2B sandbox {sandbox.sandbox_id}"
        ).start()
        bundle = agent_bundle()
        path = f"{AGENT_DIR}/{bundle.filename}"
        request.progress(f"uploading the agent ({len(bundle.data)} bytes)")
        sandbox.files.write(
            path, bundle.data, request_timeout=self._timeout(request), use_octet_stream=True
        )
        argv = request.agent_argv("stdio", bundle=path, framing="base64")
        request.progress("starting the agent")
        # exec: bash (E2B runs commands through `bash -l -c`) becomes the agent.
        handle = sandbox.commands.run(
            "exec " + shlex.join(argv),
            background=True,
            stdin=True,
            timeout=0,
            envs=options.env or None,
            request_timeout=self._timeout(request),
        )
        self._stream = CommandStream(sandbox.commands, handle)
        return Stdio(self._stream, "base64")

    def terminate(self) -> None:
        """Stop renewing and kill the sandbox (found by its session label if the create
        call was cut short). Safe to call twice and before :meth:`launch`."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.stop()
        if self._stream is not None:
            self._stream.disown()
        sandbox, self._sandbox = self._sandbox, None
        session, self._session = self._session, None
        try:
            if sandbox is not None:
                sandbox.kill()
            elif session is not None:
                # Interrupted inside Sandbox.create: the sandbox may exist all the same.
                _kill([info.sandbox_id for info in _listed(None, {"rlm-session": session})])
        except Exception as exc:
            log.warning("could not kill the E2B sandbox (its timeout will end it): %s", exc)
        finally:
            terminated_before_exit(self)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent command's exit code once it has ended."""
        return None if self._stream is None else self._stream.wait(wait)

    def diagnostics(self) -> str:
        """The last lines of the agent's stderr."""
        return "" if self._stream is None else self._stream.stderr_tail()

    @property
    def sandbox_id(self) -> str | None:
        """The E2B sandbox id, once created."""
        return None if self._sandbox is None else str(self._sandbox.sandbox_id)

    # -- the lease --------------------------------------------------------------------------

    def _lease_seconds(self) -> int:
        """The E2B timeout to set now: twice the lease interval, never past max_lifetime."""
        seconds = 2 * self.options.lease_interval
        if self._max_lifetime is not None:
            left = self._max_lifetime - (time.monotonic() - self._created_at)
            seconds = min(seconds, left)
        return max(1, math.ceil(seconds))

    def _renew(self) -> None:
        sandbox = self._sandbox
        if sandbox is None:
            return
        lived = time.monotonic() - self._created_at
        if self._max_lifetime is not None and lived >= self._max_lifetime:
            return  # its last timeout ends it at max_lifetime
        sandbox.set_timeout(self._lease_seconds())

    @staticmethod
    def _timeout(request: LaunchRequest) -> float:
        return max(request.remaining(), 1.0)

    # -- leftovers --------------------------------------------------------------------------

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the running or paused E2B sandboxes that rlm-core started (metadata key
        ``rlm-core``), with ``tag`` among their metadata values when given."""
        return [info.sandbox_id for info in _listed(tag)]

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Kill sandboxes by id, or those listed with ``tag`` (neither: every rlm-core
        sandbox); return the ids killed."""
        wanted = list(ids)
        if not wanted or tag is not None:
            wanted += [info.sandbox_id for info in _listed(tag)]
        return _kill(dict.fromkeys(wanted))


def _kill(ids: Iterable[str]) -> list[str]:
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
