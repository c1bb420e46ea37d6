"""The Modal launcher: creates a sandbox, ships the agent in, starts it over exec stdio.

Every SDK call is here, and the ``modal`` package is imported only when one is made. A
start runs on a worker thread while the caller waits for it up to the request's deadline,
so a start that times out or is interrupted (``KeyboardInterrupt``) still terminates a
sandbox whose creation was already on its way.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rlm_core.bridge.carriers import Connection, Stdio
from rlm_core.environments.launcher import (
    SANDBOX_LABEL,
    Launcher,
    LaunchRequest,
    terminate_at_exit,
    terminated_before_exit,
)
from rlm_core.environments.shipping import agent_bundle
from rlm_core.exceptions import SandboxError
from rlm_modal.stream import ExecStream, StderrTail

log = logging.getLogger(__name__)

APP_NAME = "rlm-core"
"""The Modal app (in the active Modal environment) that holds every rlm-core sandbox."""

USER_TAG = "rlm-tag"
"""The Modal tag that carries the ``tag`` setting."""

TAG_KEYS = (SANDBOX_LABEL, "rlm-session", "rlm-environment", "rlm-host", USER_TAG)
"""The tags whose values :meth:`ModalLauncher.list_sandboxes` matches a ``tag`` against."""

AGENT_DIR = "/tmp"
"""Where the agent bundle is uploaded in the sandbox."""


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


def _exit_status(returncode: int) -> int:
    """Modal reports a process killed by signal N as 128 + N; the core says -N."""
    return -(returncode - 128) if 128 < returncode < 128 + 65 else returncode


class ModalLauncher(Launcher):
    """One agent in one Modal sandbox, reached over the ``stdio`` carrier (binary framing)."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.timings: dict[str, float] = {}
        """Seconds each step of the start took: ``create``, ``ship`` and ``exec``."""
        self._lock = threading.Lock()
        self._closed = False
        self._step = "not started"
        self._sandbox: Any = None
        self._sandbox_id: str | None = None
        self._process: Any = None
        self._stream: ExecStream | None = None
        self._stderr: StderrTail | None = None

    # -- start ------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Connection:
        """Create the sandbox, upload the agent bundle, exec it; relay its stdio."""
        import modal  # noqa: F401  (first, so that the exit handler below runs before its own)

        terminate_at_exit(self)
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def start() -> None:
            try:
                outcome["connection"] = self._start(request)
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=start, name="rlm-modal-start", daemon=True).start()
        while not done.wait(0.1):
            if request.remaining() <= 0:
                raise TimeoutError(f"the Modal sandbox did not start in time ({self._step})")
        if "error" in outcome:
            raise outcome["error"]
        connection: Connection = outcome["connection"]
        return connection

    def _start(self, request: LaunchRequest) -> Connection:
        import modal

        spec = self.spec
        client = modal_client()
        self._progress(request, "looking up the Modal app")
        app = modal.App.lookup(APP_NAME, create_if_missing=True, client=client)
        self._progress(request, "creating the sandbox (its image is built once, then cached)")
        began = time.monotonic()
        sandbox = modal.Sandbox.create(
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
        self._adopt(sandbox)
        self.timings["create"] = time.monotonic() - began
        self._progress(request, "uploading the agent")
        began = time.monotonic()
        bundle = agent_bundle()
        path = f"{AGENT_DIR}/{bundle.filename}"
        sandbox.filesystem.write_bytes(bundle.data, path)
        self.timings["ship"] = time.monotonic() - began
        self._progress(request, "starting the agent")
        began = time.monotonic()
        argv = request.agent_argv("stdio", bundle=path, framing="binary")
        process = sandbox.exec(*argv, text=False)
        with self._lock:
            self._process = process
            self._stderr = StderrTail(process.stderr)
            self._stream = ExecStream(process)
            if self._closed:
                raise SandboxError("the Modal sandbox was terminated while it started")
        self.timings["exec"] = time.monotonic() - began
        return Stdio(self._stream, "binary")

    def _progress(self, request: LaunchRequest, step: str) -> None:
        with self._lock:
            if self._closed:
                raise SandboxError(f"the Modal sandbox was terminated while {self._step}")
            self._step = step
        request.progress(step)

    def _adopt(self, sandbox: Any) -> None:
        """Keep the new sandbox, or terminate it at once if the start was abandoned."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._sandbox, self._sandbox_id = sandbox, sandbox.object_id
        if closed:
            self._terminate_sandbox(sandbox)
            raise SandboxError("the Modal sandbox was terminated while it started")

    # -- the rest of the contract -----------------------------------------------------------

    @property
    def sandbox_id(self) -> str | None:
        """The Modal sandbox id (``sb-...``), once created."""
        return self._sandbox_id

    def terminate(self) -> None:
        """Terminate the sandbox (every process in it) and end the relay's stream."""
        with self._lock:
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
            stream = self._stream
        terminated_before_exit(self)
        if sandbox is not None:
            self._terminate_sandbox(sandbox)
        if stream is not None:
            stream.close()

    @staticmethod
    def _terminate_sandbox(sandbox: Any) -> None:
        try:
            sandbox.terminate()
        except Exception as exc:  # its timeout and idle_timeout still end it
            log.warning("could not terminate Modal sandbox %s: %s", sandbox.object_id, exc)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status once it has ended (``-N``: killed by signal N)."""
        process = self._process
        if process is None:
            return None
        deadline = time.monotonic() + wait
        while True:
            try:
                code = process.poll()
            except Exception:  # the sandbox is gone: nothing more to learn
                return None
            if code is not None:
                return _exit_status(int(code))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def diagnostics(self) -> str:
        """The last lines the agent wrote to its stderr."""
        return "" if self._stderr is None else self._stderr.text(wait=0.5)

    # -- per provider -----------------------------------------------------------------------

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
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Terminate sandboxes by id, or those listed for ``tag`` (with neither: every
        rlm-core sandbox); return the ids terminated."""
        import modal

        wanted = list(ids)
        if tag is not None or not wanted:
            wanted += cls.list_sandboxes(tag=tag) or []
        client = modal_client()
        stopped: list[str] = []
        for sandbox_id in dict.fromkeys(wanted):
            with contextlib.suppress(modal.exception.NotFoundError):
                modal.Sandbox.from_id(sandbox_id, client=client).terminate()
                stopped.append(sandbox_id)
        return stopped
