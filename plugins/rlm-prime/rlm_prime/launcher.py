"""The Prime launcher: the SDK calls that create a sandbox, upload the agent, run it, end it.

Everything else is the core's :class:`~rlm_core.environments.remote.RemoteLauncher`. The
sandbox is never left to bill: it is deleted on ``close()``, on every failed start and at
interpreter exit; Prime itself ends it at its ``timeout_minutes`` (from ``max_lifetime``)
and, once the agent has gone (its heartbeat watchdog ends it when the host does), at its
``idle_timeout_minutes``; ``rlm cleanup prime`` finds leftovers by their ``rlm-core``
label. Prime's timeouts cannot be extended while a sandbox runs, so there is no lease.

The sync ``SandboxClient`` creates, waits, uploads, lists and deletes; the live process
(``open_process``) exists only in the async client, which runs on a
:class:`~rlm_core.environments.event_loop.LoopThread` of this launcher. ``prime_sandboxes``
is imported only when a sandbox is started, listed or ended.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rlm_core.environments.event_loop import LoopThread
from rlm_core.environments.launcher import SANDBOX_LABEL, LaunchRequest
from rlm_core.environments.remote import RemoteLauncher
from rlm_prime.stream import ProcessStream

log = logging.getLogger(__name__)

USER_LABEL = "rlm-tag"
"""The label key that carries the ``tag`` setting."""

DEFAULT_TIMEOUT_MINUTES = 60
"""A sandbox's lifetime when ``max_lifetime`` is not set (Prime's own default)."""

MAX_TIMEOUT_MINUTES = 24 * 60
"""Prime's longest sandbox lifetime."""

STREAM_END_WAIT = 1.0
"""Seconds termination waits for the live process's stream to end once its sandbox is
deleted, before cancelling it (a cancelled stream is, to the SDK, one to re-attach)."""


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox is created with (from the environment's settings)."""

    docker_image: str | None = None
    cpu_cores: float = 1.0
    memory_gb: float = 1.0
    disk_size_gb: float | None = None
    network_allowlist: list[str] | None = field(default_factory=list)
    idle_timeout_minutes: int = 5
    region: str | None = None
    team_id: str | None = None
    tag: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def labels(self, request: LaunchRequest) -> list[str]:
        """The sandbox's labels: the request's and the ``tag`` setting's, as
        ``key=value`` strings (Prime's labels are a list of strings)."""
        labels = dict(request.labels)
        if self.tag is not None:
            labels[USER_LABEL] = self.tag
        return encode_labels(labels)


def encode_labels(labels: dict[str, str]) -> list[str]:
    """``{"k": "v"}`` as Prime labels: ``["k=v"]``."""
    return [f"{key}={value}" for key, value in labels.items()]


def decode_labels(labels: list[str]) -> dict[str, str]:
    """Prime labels back as a mapping (a label without ``=`` maps to ``""``)."""
    pairs = (label.partition("=") for label in labels)
    return {key: value for key, _, value in pairs}


def timeout_minutes(max_lifetime: float | None) -> int:
    """Prime's ``timeout_minutes`` for ``max_lifetime`` seconds (whole minutes, up)."""
    if max_lifetime is None:
        return DEFAULT_TIMEOUT_MINUTES
    return max(1, math.ceil(max_lifetime / 60.0))


class PrimeLauncher(RemoteLauncher):
    """Starts one agent in a new Prime sandbox (a VM) and connects to it over ``stdio``:
    the SDK's live process, whose stdout arrives as raw bytes (binary framing)."""

    provider = "Prime"

    def __init__(self, spec: SandboxSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or SandboxSpec()
        self._runner: LoopThread | None = None
        self._async_client: Any = None
        self._stream: ProcessStream | None = None
        self._api: Any = None
        self._client: Any = None
        self._client_lock = threading.Lock()

    def prepare(self) -> None:
        """Import ``prime_sandboxes`` (so that the core's exit handler runs before the
        SDK's own)."""
        import prime_sandboxes  # noqa: F401

    def create_sandbox(self, request: LaunchRequest) -> Any:
        """``SandboxClient.create`` from the image (the plugin's, built once, see
        :func:`~rlm_prime.image.ensure_image`), with egress, lifetimes and labels; then
        ``wait_for_creation`` (the sandbox is deleted if it never runs)."""
        from prime_sandboxes import CreateSandboxRequest

        from rlm_prime.image import ensure_image

        spec = self.spec
        image = spec.docker_image or ensure_image(request.progress, request.call_timeout())
        lifetime = min(timeout_minutes(request.max_lifetime), MAX_TIMEOUT_MINUTES)
        request.progress(f"creating a Prime sandbox from {image}")
        client = self._sdk()
        sandbox = client.create(
            CreateSandboxRequest(
                name=f"rlm-{request.session_id}",
                docker_image=image,
                checkpoint_id=None,
                cpu_cores=spec.cpu_cores,
                memory_gb=spec.memory_gb,
                disk_size_gb=spec.disk_size_gb,
                network_allowlist=spec.network_allowlist,
                timeout_minutes=lifetime,
                idle_timeout_minutes=min(spec.idle_timeout_minutes, lifetime),
                labels=spec.labels(request),
                region=spec.region,
                team_id=spec.team_id,
            )
        )
        try:
            request.progress(f"waiting for the Prime sandbox {sandbox.id} to run")
            client.wait_for_creation(sandbox.id, max_attempts=_attempts(request.call_timeout()))
        except BaseException:
            self._kill_id(sandbox.id)
            raise
        return sandbox

    def identify(self, sandbox: Any) -> str:
        """The Prime sandbox id."""
        return str(sandbox.id)

    def upload(self, sandbox: Any, path: str, data: bytes, request: LaunchRequest) -> None:
        """``upload_bytes`` (a multipart POST to the sandbox's gateway)."""
        self._sdk().upload_bytes(
            sandbox.id, path, data, path.rsplit("/", 1)[-1], timeout=_seconds(request)
        )

    def exec_agent(self, sandbox: Any, argv: list[str], request: LaunchRequest) -> ProcessStream:
        """``AsyncSandboxClient.open_process`` on this launcher's event loop thread."""
        from prime_sandboxes import AsyncSandboxClient

        runner = LoopThread(name=f"rlm-prime-{sandbox.id}")
        self._runner = runner
        env = self.spec.env or None

        async def open_process() -> Any:
            self._async_client = AsyncSandboxClient()
            # exec: bash (Prime runs commands with `/bin/bash -c`) becomes the agent.
            command = "exec " + shlex.join(argv)
            return await self._async_client.open_process(sandbox.id, command, env=env)

        self._stream = ProcessStream(runner, runner.run(open_process(), timeout=_seconds(request)))
        return self._stream

    def kill_sandbox(self, sandbox: Any) -> None:
        """``SandboxClient.delete``."""
        self._sdk().delete(sandbox.id)

    def _sdk(self) -> Any:
        """This launcher's sync ``SandboxClient`` (made on first use)."""
        from prime_sandboxes import APIClient, SandboxClient

        with self._client_lock:
            if self._client is None:
                self._api = APIClient()
                self._client = SandboxClient(self._api)
            return self._client

    def terminate(self) -> None:
        """Delete the sandbox (the core's termination), then release the SDK's clients
        and end this launcher's event loop thread."""
        try:
            super().terminate()
        finally:
            self._stop_loop()
            with self._client_lock:
                api, self._api, self._client = self._api, None, None
            if api is not None:
                with contextlib.suppress(Exception):
                    api.client.close()

    def _stop_loop(self) -> None:
        """Close the async client and end the event loop thread (every task on it, the
        live process's included, once its stream ended or after a short wait). Safe to
        call twice."""
        runner, self._runner = self._runner, None
        client, self._async_client = self._async_client, None
        stream, self._stream = self._stream, None
        if stream is not None:  # its sandbox is gone: the service ends the stream
            stream.wait_ended(STREAM_END_WAIT)
        if runner is not None:
            if client is not None:
                with contextlib.suppress(Exception):
                    runner.run(client.aclose(), timeout=5.0)
            runner.close()

    def _kill_id(self, sandbox_id: str) -> None:
        try:
            self.kill_sandbox_ids([sandbox_id])
        except Exception as exc:  # its server-side lifetime still ends it
            log.warning("could not delete Prime sandbox %s: %s", sandbox_id, exc)

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the live Prime sandboxes that rlm-core started (label ``rlm-core=...``),
        with ``tag`` among their label values when given."""
        found: list[str] = []
        page = 1
        with sandbox_client() as client:
            while True:
                listed = client.list(exclude_terminated=True, page=page, per_page=100)
                for sandbox in listed.sandboxes:
                    labels = decode_labels(sandbox.labels)
                    if sandbox.status in ENDED:
                        continue
                    if SANDBOX_LABEL in labels and (tag is None or tag in labels.values()):
                        found.append(sandbox.id)
                if not listed.has_next:
                    return found
                page += 1

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """Delete these sandboxes; the ids of those that were still there."""
        from prime_sandboxes import APIError

        deleted = []
        with sandbox_client() as client:
            for sandbox_id in ids:
                try:
                    client.delete(sandbox_id)
                except APIError as exc:
                    if "404" not in str(exc):
                        raise
                else:
                    deleted.append(sandbox_id)
        return deleted


ENDED = {"TERMINATED", "ERROR", "TIMEOUT"}
"""Statuses of a sandbox that no longer runs."""


@contextlib.contextmanager
def sandbox_client() -> Iterator[Any]:
    """A sync ``SandboxClient`` for the current settings (``PRIME_API_KEY``,
    ``PRIME_API_BASE_URL``, ``PRIME_TEAM_ID`` or ``~/.prime/config.json``), its HTTP
    connections closed afterwards."""
    from prime_sandboxes import APIClient, SandboxClient

    api = APIClient()
    try:
        yield SandboxClient(api)
    finally:
        api.client.close()


def _seconds(request: LaunchRequest) -> int:
    """An SDK timeout in whole seconds (``request.call_timeout()``, rounded up)."""
    return math.ceil(request.call_timeout())


def _attempts(seconds: float) -> int:
    """``wait_for_creation``'s ``max_attempts`` for a budget of about ``seconds``: the SDK
    allows one second for each of the first five and two for each after."""
    if seconds <= 5:
        return max(1, math.ceil(seconds))
    return 5 + math.ceil((seconds - 5) / 2)
