"""A wire-level fake of Prime Intellect's sandbox service, served on 127.0.0.1.

The unmodified ``prime_sandboxes`` SDK reaches it through its own settings,
``PRIME_API_BASE_URL`` and ``PRIME_API_KEY`` (:meth:`FakePrime.environ`). Served, as the
SDK calls them:

* the REST API (``Authorization: Bearer KEY``) under ``/api/v1``: ``POST /sandbox``,
  ``POST /sandbox/status:batchGet``, ``GET /sandbox`` (by ``labels``, paged),
  ``GET /sandbox/{id}``, ``GET /sandbox/{id}/error-context``, ``DELETE /sandbox/{id}``,
  ``POST /sandbox/{id}/auth``; images: ``GET /images``, ``POST /images/build``,
  ``POST /images/build/{id}/start``, ``GET /images/build/{id}``, and the build context's
  upload (``PUT`` to the ``upload_url`` the build was given);
* each sandbox's gateway, at the ``gateway_url`` of its ``gatewayAuth`` (this server, under
  ``/gateway``, on whatever address the client reached it by, so a proxy in front of the
  fake carries the gateway's traffic too), checked against the sandbox's token:
  ``POST .../upload`` (multipart) and the Connect service ``command_session.CommandSession``
  (``Start``, ``SendInput``, ``SendSignal``, ``Connect``, ``List``), served by connectrpc's
  WSGI application from the SDK's own ``MethodInfo`` constants (no server stubs ship).

Each sandbox is a :class:`rlm_conformance.fakes.FakeSandbox` (an isolated local "sandbox",
with no network when it was created with ``network_allowlist=[]``); its commands run there
through ``/bin/bash -c`` as Prime runs them, their stdout and stderr streamed as raw bytes.
Both server-side lifetimes are enforced, with a minute of :attr:`FakePrime.minute` seconds:
``timeout_minutes`` (absolute) and ``idle_timeout_minutes`` (no command running and no
gateway request for that long), as Prime ends a sandbox.

Images: ``python:3.12-slim`` (a ``python3`` without grpcio), ``no-python`` (none at all),
and any image built through the image API whose Dockerfile pip-installs grpcio and protobuf
(the fake image's ``python3`` with them). :meth:`FakePrime.add_image` adds one directly.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import secrets
import signal
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.server import ConnectWSGIApplication, EndpointSync
from prime_sandboxes._connectrpc import GOOGLE_PROTOBUF_BINARY_CODEC
from prime_sandboxes._proto.command_session import command_session_pb2 as pb
from prime_sandboxes.rpc_command_session import (
    COMMAND_SESSION_CONNECT_RPC_METHOD,
    COMMAND_SESSION_LIST_RPC_METHOD,
    COMMAND_SESSION_SEND_INPUT_RPC_METHOD,
    COMMAND_SESSION_SEND_SIGNAL_RPC_METHOD,
    COMMAND_SESSION_START_RPC_METHOD,
)
from rlm_conformance.fake_http import (
    Environ,
    HTTPError,
    Route,
    StartResponse,
    ThreadedWSGIServer,
    dispatch,
    drain,
    form_parts,
    reply,
    request_body,
    request_json,
    serve,
)
from rlm_conformance.fake_service import SandboxTable, output_chunks
from rlm_conformance.fakes import HOME, IMAGE, FakeSandbox

PATHS = {
    "image": f"{IMAGE}/bin:/usr/local/bin:/usr/bin:/bin",  # python3 with grpcio, protobuf
    "system": "/usr/local/bin:/usr/bin:/bin",  # the host's python3, which has no grpcio
    "none": "/nonexistent",  # no python3 at all
}

SERVICE = "/command_session.CommandSession/"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Image:
    """An image of the fake: ``python`` is ``image``, ``system`` or ``none``."""

    name: str
    tag: str
    python: str = "image"
    status: str = "COMPLETED"
    build_id: str = ""
    created_at: str = field(default_factory=_now)

    @property
    def reference(self) -> str:
        """What ``docker_image`` names it by (the owner-prefixed form)."""
        return f"fake-user/{self.name}:{self.tag}"

    def row(self) -> dict[str, Any]:
        """The image list's row of it."""
        return {
            "id": f"img-{self.name}-{self.tag}",
            "artifactType": "VM_SANDBOX",
            "imageName": self.name,
            "imageTag": self.tag,
            "status": self.status,
            "fullImagePath": f"registry.fake/{self.reference}",
            "displayRef": self.reference,
            "createdAt": self.created_at,
        }


@dataclass
class Session:
    """A command session (a process started through ``Start``)."""

    uuid: str
    pid: int
    popen: Any
    inputs: set[str] = field(default_factory=set)
    stdin_lock: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None


@dataclass
class Sandbox:
    """One sandbox of the fake."""

    sandbox_id: str
    request: dict[str, Any]
    image: Image
    box: FakeSandbox
    token: str
    job_id: str
    created: float
    last_active: float
    created_at: str = field(default_factory=_now)
    status: str = "RUNNING"
    reason: str | None = None
    sessions: dict[str, Session] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The labels it was created with."""
        return list(self.request.get("labels") or [])

    def busy(self) -> bool:
        """Whether a command runs in it."""
        return any(not session.ended.is_set() for session in self.sessions.values())

    def json(self) -> dict[str, Any]:
        """The REST API's view of it."""
        request = self.request
        return {
            "id": self.sandbox_id,
            "name": request.get("name", ""),
            "dockerImage": request.get("docker_image", ""),
            "cpuCores": request.get("cpu_cores", 1.0),
            "memoryGB": request.get("memory_gb", 1.0),
            "diskSizeGB": request.get("disk_size_gb", 5.0),
            "diskMountPath": "/",
            "gpuCount": 0,
            "vm": True,
            "networkAllowlist": request.get("network_allowlist"),
            "status": self.status,
            "timeoutMinutes": request.get("timeout_minutes", 60),
            "idleTimeoutMinutes": request.get("idle_timeout_minutes"),
            "terminationReason": self.reason,
            "labels": self.labels,
            "createdAt": self.created_at,
            "updatedAt": _now(),
        }


class FakePrime:
    """The fake service. ``start()`` serves it; ``stop()`` ends every sandbox and stops.

    ``minute``: seconds a "minute" of the sandboxes' timeouts lasts. ``create_error``:
    when set to ``(status, message)``, ``POST /sandbox`` answers with that error.
    ``create_delay``: seconds the create call waits after the sandbox was created, before
    answering, and ``on_create`` is called then (to cut a start short in the middle of it).
    ``status_on_create``: the status a new sandbox reports (``ERROR``: it never runs).
    ``upload_error``: when set to ``(status, message)``, the gateway's upload answers so.
    """

    def __init__(self, minute: float = 60.0) -> None:
        self.minute = minute
        self.api_key = "pit_" + secrets.token_hex(20)
        self.images: dict[str, Image] = {}
        self._lock = threading.RLock()
        self.sandboxes: SandboxTable[Sandbox] = SandboxTable(self._lock)
        self.ended: dict[str, Sandbox] = {}
        """Sandboxes that ended, by id (their ``status`` and ``reason`` say how)."""
        self.killed: list[str] = []
        """Ids of sandboxes ended, in order (deleted or past a timeout)."""
        self.reaped: list[str] = []
        """Ids of sandboxes ended by a server-side timeout."""
        self.builds = 0
        """Image builds requested."""
        self.calls: list[str] = []
        """``METHOD path`` of every request (gateway requests prefixed ``gateway``)."""
        self.create_error: tuple[int, str] | None = None
        self.create_delay = 0.0
        self.on_create: Callable[[], object] | None = None
        self.status_on_create = "RUNNING"
        self.upload_error: tuple[int, str] | None = None
        self._uploads: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._server: ThreadedWSGIServer | None = None
        self._stopped = threading.Event()
        self._gateway = _CommandSessionApp(self)
        self.add_image("python", "3.12-slim", python="system")
        self.add_image("no-python", "latest", python="none")

    # -- running ------------------------------------------------------------------------------

    def start(self) -> FakePrime:
        """Serve on a free loopback port; a reaper thread enforces the timeouts."""
        self._server = serve(self._app)
        threading.Thread(target=self._reap, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """The base URL of the REST API (and the gateway, under ``/gateway``)."""
        assert self._server is not None
        return self._server.url

    def environ(self) -> dict[str, str]:
        """The environment variables that point the SDK at this fake."""
        return {"PRIME_API_BASE_URL": self.url, "PRIME_API_KEY": self.api_key}

    def stop(self) -> None:
        """End every sandbox and stop serving."""
        self._stopped.set()
        for sandbox_id in self.live():
            self.kill(sandbox_id)
        if self._server is not None:
            self._server.stop()

    def _reap(self) -> None:
        while not self._stopped.wait(0.05):
            now = time.monotonic()
            for sandbox in self.sandboxes.running():
                lifetime = sandbox.request.get("timeout_minutes", 60) * self.minute
                idle = sandbox.request.get("idle_timeout_minutes")
                if now - sandbox.created >= lifetime:
                    self.kill(sandbox.sandbox_id, status="TIMEOUT", reason="TIMEOUT")
                elif (
                    idle is not None
                    and not sandbox.busy()
                    and now - sandbox.last_active >= idle * self.minute
                ):
                    self.kill(sandbox.sandbox_id, status="TERMINATED", reason="IDLE_TIMEOUT")

    # -- the service's state --------------------------------------------------------------------

    def add_image(self, name: str, tag: str = "latest", python: str = "image") -> Image:
        """An image ``name:tag`` (``python``: ``image``, ``system`` or ``none``)."""
        image = Image(name, tag, python)
        with self._lock:
            self.images[f"{name}:{tag}"] = image
        return image

    def image(self, reference: str) -> Image | None:
        """A built image by ``name:tag``, owner-prefixed reference or full path."""
        name = reference.rsplit("/", 1)[-1]
        if ":" not in name:
            name += ":latest"
        with self._lock:
            image = self.images.get(name)
        return image if image is not None and image.status == "COMPLETED" else None

    def live(self) -> list[str]:
        """Ids of the sandboxes still running."""
        return self.sandboxes.ids()

    def kill(self, sandbox_id: str, status: str = "TERMINATED", reason: str = "DELETED") -> bool:
        """End a sandbox (every process in it); ``False`` if there was none running.
        ``status``/``reason``: how it ended (``TIMEOUT``, ``IDLE_TIMEOUT``: by the service)."""

        def record(sandbox: Sandbox) -> None:
            sandbox.status, sandbox.reason = status, reason
            self.ended[sandbox_id] = sandbox
            self.killed.append(sandbox_id)
            if reason != "DELETED":
                self.reaped.append(sandbox_id)

        return self.sandboxes.end(sandbox_id, record)

    def sandbox(self, sandbox_id: str) -> Sandbox:
        """A sandbox, running or ended, by id (404 if there is none)."""
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id) or self.ended.get(sandbox_id)
        if sandbox is None:
            raise HTTPError(404, f"Sandbox {sandbox_id} not found")
        return sandbox

    def by_token(self, token: str) -> Sandbox | None:
        """The running sandbox whose gateway token this is."""
        with self._lock:
            for sandbox in self.sandboxes.values():
                if secrets.compare_digest(sandbox.token, token):
                    return sandbox
        return None

    # -- HTTP -----------------------------------------------------------------------------------

    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        gateway = path.startswith("/gateway/")
        self.calls.append(f"{'gateway ' if gateway else ''}{method} {path}")
        try:
            if gateway:
                return self._gateway_request(environ, start_response, path)
            if method == "PUT" and path.startswith("/build-context/"):
                self._uploads[path.rsplit("/", 1)[-1]] = request_body(environ)
                return reply(start_response, 200, None)
            if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.api_key}":
                raise HTTPError(401, "Invalid API key")
            return dispatch(self._routes(), environ, start_response)
        except HTTPError as exc:
            drain(environ)
            return reply(start_response, exc.status, {"detail": exc.message, **exc.extra})

    def _routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("POST", "/api/v1/sandbox"): self._create,
            ("GET", "/api/v1/sandbox"): self._list,
            ("POST", "/api/v1/sandbox/status:batchGet"): self._statuses,
            ("GET", r"/api/v1/sandbox/([^/:]+)"): self._get,
            ("GET", r"/api/v1/sandbox/([^/]+)/error-context"): self._error_context,
            ("DELETE", r"/api/v1/sandbox/([^/]+)"): self._delete,
            ("POST", r"/api/v1/sandbox/([^/]+)/auth"): self._auth,
            ("GET", "/api/v1/images"): self._list_images,
            ("POST", "/api/v1/images/build"): self._request_build,
            ("POST", r"/api/v1/images/build/([^/]+)/start"): self._start_build,
            ("GET", r"/api/v1/images/build/([^/]+)"): self._build_status,
        }

    # -- REST: sandboxes --------------------------------------------------------------------------

    def _create(self, environ: Environ) -> tuple[int, Any]:
        body = request_json(environ)
        if self.create_error is not None:
            raise HTTPError(*self.create_error)
        if body.get("vm") is not True:
            raise HTTPError(400, "only VM sandboxes are served")
        image = self.image(str(body.get("docker_image", "")))
        if image is None:
            raise HTTPError(400, f"image {body.get('docker_image')!r} not found")
        sandbox_id = f"fake{next(self._ids)}{secrets.token_hex(4)}"
        allowlist = body.get("network_allowlist")
        box = FakeSandbox(
            sandbox_id,
            network=allowlist is None or bool(allowlist),
            env=body.get("environment_vars") or {},
        )
        now = time.monotonic()
        sandbox = Sandbox(
            sandbox_id, body, image, box, secrets.token_hex(16), f"job-{sandbox_id}", now, now
        )
        sandbox.status = self.status_on_create
        with self._lock:
            self.sandboxes[sandbox_id] = sandbox
        if self.on_create is not None:
            self.on_create()
        if self.create_delay:
            time.sleep(self.create_delay)
        return 201, {**sandbox.json(), "gatewayAuth": self._gateway_auth(environ, sandbox)}

    def _gateway_auth(self, environ: Environ, sandbox: Sandbox) -> dict[str, Any]:
        expires = datetime.now(UTC) + timedelta(hours=1)
        return {
            "gateway_url": f"http://{environ['HTTP_HOST']}/gateway",
            "user_ns": "fake-user",
            "job_id": sandbox.job_id,
            "token": sandbox.token,
            "expires_at": expires.isoformat(),
        }

    def _list(self, environ: Environ) -> tuple[int, Any]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        wanted = set(query.get("labels", []))
        active = query.get("is_active", ["false"])[0] == "true"
        page = int(query.get("page", ["1"])[0])
        per_page = int(query.get("per_page", ["50"])[0])
        with self._lock:
            every = list(self.sandboxes.values()) + ([] if active else list(self.ended.values()))
        matching = [s.json() for s in every if wanted <= set(s.labels)]
        listed = matching[(page - 1) * per_page : page * per_page]
        return 200, {
            "sandboxes": listed,
            "total": len(matching),
            "page": page,
            "perPage": per_page,
            "hasNext": page * per_page < len(matching),
        }

    def _statuses(self, environ: Environ) -> tuple[int, Any]:
        statuses, errors = [], []
        for sandbox_id in request_json(environ).get("sandbox_ids", []):
            try:
                sandbox = self.sandbox(sandbox_id)
            except HTTPError:
                errors.append({"sandbox_id": sandbox_id, "code": "NOT_FOUND", "message": "gone"})
                continue
            statuses.append(
                {"sandbox_id": sandbox_id, "status": sandbox.status, "error_type": sandbox.reason}
            )
        return 200, {"statuses": statuses, "errors": errors}

    def _get(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        return 200, self.sandbox(sandbox_id).json()

    def _error_context(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        sandbox = self.sandbox(sandbox_id)
        return 200, {"status": sandbox.status, "errorType": sandbox.reason}

    def _delete(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        if not self.kill(sandbox_id):
            raise HTTPError(404, f"Sandbox {sandbox_id} not found")
        return 200, {"success": True}

    def _auth(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        sandbox = self.sandbox(sandbox_id)
        if sandbox.status != "RUNNING":
            raise HTTPError(409, f"Sandbox {sandbox_id} is not running")
        return 200, self._gateway_auth(environ, sandbox)

    # -- REST: images ---------------------------------------------------------------------------

    def _list_images(self, environ: Environ) -> tuple[int, Any]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        search = query.get("search", [""])[0]
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["100"])[0])
        with self._lock:
            rows = [image.row() for image in self.images.values() if search in image.name]
        return 200, {
            "data": rows[offset : offset + limit],
            "totalCount": len(rows),
            "offset": offset,
            "limit": limit,
        }

    def _request_build(self, environ: Environ) -> tuple[int, Any]:
        body = request_json(environ)
        image = self.add_image(body["image_name"], body.get("image_tag") or "latest", "none")
        image.status, image.build_id = "PENDING", f"build{next(self._ids)}"
        self.builds += 1
        base = f"http://{environ['HTTP_HOST']}"
        return 201, {
            "build_id": image.build_id,
            "upload_url": f"{base}/build-context/{image.build_id}",
            "expires_in": 3600,
            "fullImagePath": f"registry.fake/{image.reference}",
            "dockerfile_path": body.get("dockerfile_path"),
        }

    def _build(self, build_id: str) -> Image:
        with self._lock:
            for image in self.images.values():
                if image.build_id == build_id:
                    return image
        raise HTTPError(404, f"build {build_id} not found")

    def _start_build(self, environ: Environ, build_id: str) -> tuple[int, Any]:
        request_json(environ)
        image = self._build(build_id)
        context = self._uploads.get(build_id)
        if context is None:
            raise HTTPError(400, "the build context was not uploaded")
        with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as tar:
            member = tar.extractfile("Dockerfile")
            dockerfile = member.read().decode() if member is not None else ""
        # What the Dockerfile installs decides what the fake's image gives the sandbox.
        installs = "grpcio" in dockerfile and "protobuf" in dockerfile
        image.python = "image" if installs else "system"
        image.status = "COMPLETED"
        return 200, {"build_id": build_id, "status": "BUILDING"}

    def _build_status(self, environ: Environ, build_id: str) -> tuple[int, Any]:
        return 200, {"build_id": build_id, "status": self._build(build_id).status}

    # -- the gateway ------------------------------------------------------------------------------

    def _gateway_request(
        self, environ: Environ, start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        parts = path.split("/", 4)  # "", "gateway", user_ns, job_id, rest
        if len(parts) < 5:
            raise HTTPError(404, "no such gateway route")
        rest = "/" + parts[4]
        token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        sandbox = self.by_token(token)
        if sandbox is not None and sandbox.job_id == parts[3]:
            sandbox.last_active = time.monotonic()
        if rest.startswith(SERVICE):  # the service checks the token (NOT_FOUND when gone)
            environ["PATH_INFO"], environ["SCRIPT_NAME"] = rest, ""
            return self._gateway(environ, start_response)
        if sandbox is None or sandbox.job_id != parts[3]:
            with self._lock:
                gone = any(s.job_id == parts[3] for s in self.ended.values())
            if gone:
                raise HTTPError(410, "sandbox terminated", error="sandbox_terminated")
            raise HTTPError(401, "invalid gateway token")
        if rest == "/upload" and environ["REQUEST_METHOD"] == "POST":
            if self.upload_error is not None:
                raise HTTPError(*self.upload_error)
            return reply(start_response, 200, self._upload(sandbox, environ))
        raise HTTPError(404, f"no gateway route {rest}")

    def _upload(self, sandbox: Sandbox, environ: Environ) -> dict[str, Any]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        parts = form_parts(environ.get("CONTENT_TYPE", ""), request_body(environ))
        path = query["path"][0]
        size = 0
        for part in parts:
            data = part.get_payload(decode=True) or b""
            sandbox.box.write_file(path, data)
            size += len(data)
        return {"success": True, "path": path, "size": size, "timestamp": _now()}


# -- the gateway's command sessions -------------------------------------------------------------


def _event(**kind: Any) -> Any:
    return pb.CommandSessionEvent(**kind)


class _CommandSessionApp(ConnectWSGIApplication):
    """``command_session.CommandSession`` over the fake's sandboxes, by gateway token."""

    def __init__(self, fake: FakePrime) -> None:
        self.fake = fake
        methods = {
            "Start": EndpointSync.server_stream(
                method=COMMAND_SESSION_START_RPC_METHOD, function=self.start
            ),
            "Connect": EndpointSync.server_stream(
                method=COMMAND_SESSION_CONNECT_RPC_METHOD, function=self.connect
            ),
            "SendInput": EndpointSync.unary(
                method=COMMAND_SESSION_SEND_INPUT_RPC_METHOD, function=self.send_input
            ),
            "SendSignal": EndpointSync.unary(
                method=COMMAND_SESSION_SEND_SIGNAL_RPC_METHOD, function=self.send_signal
            ),
            "List": EndpointSync.unary(method=COMMAND_SESSION_LIST_RPC_METHOD, function=self.list),
        }
        super().__init__(
            endpoints={SERVICE + name: endpoint for name, endpoint in methods.items()},
            codecs=[GOOGLE_PROTOBUF_BINARY_CODEC],
        )

    @property
    def path(self) -> str:
        return SERVICE.rstrip("/")

    def _sandbox(self, ctx: Any) -> Sandbox:
        token = (ctx.request_headers.get("authorization") or "").removeprefix("Bearer ")
        sandbox = self.fake.by_token(token)
        if sandbox is None:
            raise ConnectError(Code.NOT_FOUND, "sandbox not found")
        return sandbox

    def _session(self, ctx: Any, selector: Any) -> tuple[Sandbox, Session]:
        sandbox = self._sandbox(ctx)
        session = sandbox.sessions.get(selector.session_uuid)
        if session is None:
            raise ConnectError(Code.NOT_FOUND, f"session {selector.session_uuid} not found")
        return sandbox, session

    def start(self, request: Any, ctx: Any) -> Iterator[Any]:
        sandbox = self._sandbox(ctx)
        uuid = request.session_uuid if request.HasField("session_uuid") else secrets.token_hex(8)
        if uuid in sandbox.sessions:  # a retried Start attaches to the session
            yield from self._follow(sandbox, sandbox.sessions[uuid])
            return
        spec = request.command
        cwd = spec.cwd if spec.HasField("cwd") and spec.cwd else HOME
        try:
            # The image's PATH, set inside the sandbox (the host finds `unshare` on its own).
            path = f"PATH={PATHS[sandbox.image.python]}"
            argv = ["/usr/bin/env", path, spec.cmd, *spec.args]
            popen = sandbox.box.exec(argv, env=dict(spec.envs), cwd=cwd)
        except ProcessLookupError as exc:
            raise ConnectError(Code.NOT_FOUND, str(exc)) from None
        session = Session(uuid, popen.pid, popen)
        sandbox.sessions[uuid] = session
        if not (request.HasField("stdin") and request.stdin):
            popen.stdin.close()
        yield pb.StartResponse(event=_event(start=pb.CommandSessionEvent.StartEvent(pid=popen.pid)))
        try:
            for kind, data in output_chunks(popen):
                data_event = pb.CommandSessionEvent.DataEvent(**{kind: data})
                yield pb.StartResponse(event=_event(data=data_event))
            code = popen.wait()
        finally:
            sandbox.last_active = time.monotonic()
            session.exit_code = popen.poll()
            session.ended.set()
        if sandbox.box.killed:
            raise ConnectError(Code.NOT_FOUND, "the sandbox was terminated")
        exit_code = 128 - code if code < 0 else code  # a shell's code for a signal
        yield pb.StartResponse(
            event=_event(end=pb.CommandSessionEvent.EndEvent(exit_code=exit_code))
        )

    def _follow(self, sandbox: Sandbox, session: Session) -> Iterator[Any]:
        start = pb.CommandSessionEvent.StartEvent(pid=session.pid)
        yield pb.StartResponse(event=_event(start=start))
        session.ended.wait()
        if sandbox.box.killed or session.exit_code is None:
            raise ConnectError(Code.NOT_FOUND, "the sandbox was terminated")
        code = session.exit_code
        end = pb.CommandSessionEvent.EndEvent(exit_code=128 - code if code < 0 else code)
        yield pb.StartResponse(event=_event(end=end))

    def connect(self, request: Any, ctx: Any) -> Iterator[Any]:
        sandbox, session = self._session(ctx, request.session)
        for response in self._follow(sandbox, session):
            yield pb.ConnectResponse(event=response.event)

    def send_input(self, request: Any, ctx: Any) -> Any:
        _, session = self._session(ctx, request.session)
        if request.input_uuid in session.inputs:
            return pb.SendInputResponse()  # a retried write is applied once
        try:
            with session.stdin_lock:
                session.popen.stdin.write(request.input.stdin)
                session.popen.stdin.flush()
        except (OSError, ValueError) as exc:
            raise ConnectError(Code.NOT_FOUND, f"the process's stdin is closed: {exc}") from None
        session.inputs.add(request.input_uuid)
        return pb.SendInputResponse()

    def send_signal(self, request: Any, ctx: Any) -> Any:
        _, session = self._session(ctx, request.session)
        number = signal.SIGKILL if request.signal == pb.SIGNAL_SIGKILL else signal.SIGTERM
        with contextlib.suppress(OSError):
            os.killpg(session.popen.pid, number)
        return pb.SendSignalResponse()

    def list(self, request: Any, ctx: Any) -> Any:
        return pb.ListResponse()
