"""A wire-level fake of E2B: its REST API and envd, served on 127.0.0.1.

The unmodified ``e2b`` SDK reaches it through its own settings, ``E2B_API_URL`` and
``E2B_SANDBOX_URL`` (:meth:`FakeE2B.environ`). Served, as the SDK calls them:

* REST (``X-API-KEY``): ``POST /v2/sandboxes``, ``GET /v2/sandboxes?metadata=``,
  ``DELETE /sandboxes/{id}``, ``POST /sandboxes/{id}/timeout``; templates:
  ``GET /templates/aliases/{name}``, ``POST /v3/templates``,
  ``POST /v2/templates/{id}/builds/{build}``, ``GET /templates/{id}/builds/{build}/status``;
* envd, routed by the ``E2b-Sandbox-Id`` header and checked against the sandbox's
  ``X-Access-Token``: ``GET /health``, ``POST /files`` (octet-stream or multipart) and the
  Connect service ``process.Process`` on the ``ProcessWSGIApplication`` stub that ships in
  the SDK's wheel.

Each sandbox is a :class:`rlm_conformance.fakes.FakeSandbox` (an isolated local "sandbox",
with no network when the SDK asked for ``allow_internet_access=False``); its processes run
there and their stdin and stdout are relayed as envd relays them. A sandbox's ``timeout`` is
enforced: once it passes, the fake kills the sandbox, as E2B does.

Templates: ``base`` (a ``python3`` without grpcio), ``no-python`` (none at all), and any
template built through the template API whose steps pip-install grpcio and protobuf (the
fake image's ``python3`` with them). :meth:`FakeE2B.add_template` adds one directly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.client_shared import ENVD_JSON_CODEC
from e2b.envd.process import process_pb
from e2b.envd.process.process_connect import ProcessWSGIApplication
from protobuf import Oneof
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

ENVD_VERSION = "0.5.7"
"""The envd version the fake reports (stdin close and octet-stream uploads need it)."""

PROFILES = {
    # A login shell (E2B runs commands with `bash -l -c`) reads the host's /etc/profile,
    # which resets PATH; the image's own profile puts its interpreter first again.
    "image": f"export PATH={IMAGE}/bin:$PATH\n",
    "system": "",  # the host's python3, which has no grpcio
    "none": "export PATH=/nonexistent\n",  # no python3 at all
}


@dataclass
class Template:
    """A template of the fake: ``python`` is ``image``, ``system`` or ``none``."""

    template_id: str
    name: str
    python: str = "image"
    cpu_count: int = 2
    memory_mb: int = 512
    ready: bool = True


@dataclass
class Process:
    """A process started through envd."""

    pid: int
    popen: Any
    stdin_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Sandbox:
    """One sandbox of the fake."""

    sandbox_id: str
    template: Template
    box: FakeSandbox
    metadata: dict[str, str]
    token: str
    ends_at: float
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    processes: dict[int, Process] = field(default_factory=dict)


class FakeE2B:
    """The fake service. ``start()`` serves it; ``stop()`` kills every sandbox and stops.

    ``create_error``: when set to ``(status, message)``, ``POST /v2/sandboxes`` answers
    with that error. ``create_delay``: seconds the create call waits after the sandbox was
    created, before answering, and ``on_create`` is called then (to cut a start short in
    the middle of it).
    """

    def __init__(self) -> None:
        self.api_key = "e2b_" + secrets.token_hex(20)
        self.templates: dict[str, Template] = {}
        self._lock = threading.RLock()
        self.sandboxes: SandboxTable[Sandbox] = SandboxTable(self._lock)
        self.killed: list[str] = []
        """Ids of sandboxes killed, in order (by the API or by their timeout)."""
        self.reaped: list[str] = []
        """Ids of sandboxes killed because their timeout passed."""
        self.builds = 0
        """Template builds requested."""
        self.calls: list[str] = []
        """``METHOD path`` of every request (envd requests prefixed ``envd``)."""
        self.create_error: tuple[int, str] | None = None
        self.create_delay = 0.0
        self.on_create: Callable[[], object] | None = None
        self._ids = itertools.count(1)
        self._pids = itertools.count(100)
        self._server: ThreadedWSGIServer | None = None
        self._stopped = threading.Event()
        self._envd = ProcessWSGIApplication(_ProcessService(self), codecs=[ENVD_JSON_CODEC])
        self.add_template("base", python="system")
        self.add_template("no-python", python="none")

    # -- running ----------------------------------------------------------------------------

    def start(self) -> FakeE2B:
        """Serve on a free loopback port; a reaper thread enforces sandbox timeouts."""
        self._server = serve(self._app)
        threading.Thread(target=self._reap, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """The base URL of both the REST API and envd."""
        assert self._server is not None
        return self._server.url

    def environ(self) -> dict[str, str]:
        """The environment variables that point the SDK at this fake."""
        return {"E2B_API_URL": self.url, "E2B_SANDBOX_URL": self.url, "E2B_API_KEY": self.api_key}

    def stop(self) -> None:
        """Kill every sandbox and stop serving."""
        self._stopped.set()
        for sandbox_id in self.live():
            self.kill(sandbox_id)
        if self._server is not None:
            self._server.stop()

    def _reap(self) -> None:
        while not self._stopped.wait(0.1):
            now = time.monotonic()
            due = [s.sandbox_id for s in self.sandboxes.running() if s.ends_at <= now]
            for sandbox_id in due:
                self.kill(sandbox_id, reaped=True)

    # -- the service's state ----------------------------------------------------------------

    def add_template(self, name: str, python: str = "image", **sizes: int) -> Template:
        """A template named ``name`` (``python``: ``image``, ``system`` or ``none``)."""
        template = Template(f"tpl{next(self._ids)}", name, python, **sizes)
        with self._lock:
            self.templates[template.template_id] = template
        return template

    def template(self, name_or_id: str) -> Template | None:
        """A ready template by name (``name:tag`` allowed) or id."""
        name = name_or_id.split(":", 1)[0]
        with self._lock:
            for template in self.templates.values():
                if template.ready and name in (template.name, template.template_id):
                    return template
        return None

    def live(self) -> list[str]:
        """Ids of the sandboxes still running."""
        return self.sandboxes.ids()

    def kill(self, sandbox_id: str, reaped: bool = False) -> bool:
        """Kill a sandbox (every process in it); ``False`` if there was none. ``reaped``:
        killed because its timeout passed."""

        def record(sandbox: Sandbox) -> None:
            self.killed.append(sandbox_id)
            if reaped:
                self.reaped.append(sandbox_id)

        return self.sandboxes.end(sandbox_id, record)

    def sandbox(self, environ: Environ) -> Sandbox:
        """The sandbox an envd request is for (by ``E2b-Sandbox-Id``, token checked)."""
        with self._lock:
            sandbox = self.sandboxes.get(environ.get("HTTP_E2B_SANDBOX_ID", ""))
        if sandbox is None:
            raise HTTPError(502, "sandbox not found")
        if not secrets.compare_digest(environ.get("HTTP_X_ACCESS_TOKEN", ""), sandbox.token):
            raise HTTPError(401, "invalid access token")
        return sandbox

    # -- HTTP ---------------------------------------------------------------------------------

    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        envd = "HTTP_E2B_SANDBOX_ID" in environ
        self.calls.append(f"{'envd ' if envd else ''}{method} {path}")
        try:
            if envd:
                sandbox = self.sandbox(environ)
                if path.startswith("/process.Process/"):
                    return self._envd(environ, start_response)
                if (method, path) == ("GET", "/health"):
                    return reply(start_response, 204, None)
                if (method, path) == ("POST", "/files"):
                    return reply(start_response, 200, self._upload(sandbox, environ))
                raise HTTPError(404, f"no envd route {method} {path}")
            if environ.get("HTTP_X_API_KEY") != self.api_key:
                raise HTTPError(401, "Invalid API key")
            return dispatch(self._routes(), environ, start_response)
        except HTTPError as exc:
            drain(environ)
            return reply(start_response, exc.status, {"code": exc.status, "message": exc.message})

    def _routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("POST", "/v2/sandboxes"): self._create,
            ("GET", "/v2/sandboxes"): self._list,
            ("DELETE", r"/sandboxes/([^/]+)"): self._delete,
            ("POST", r"/sandboxes/([^/]+)/timeout"): self._set_timeout,
            ("GET", r"/templates/aliases/([^/]+)"): self._alias,
            ("POST", "/v3/templates"): self._request_build,
            ("POST", r"/v2/templates/([^/]+)/builds/([^/]+)"): self._trigger_build,
            ("GET", r"/templates/([^/]+)/builds/([^/]+)/status"): self._build_status,
        }

    # -- REST: sandboxes ------------------------------------------------------------------------

    def _create(self, environ: Environ) -> tuple[int, Any]:
        body = request_json(environ)
        if self.create_error is not None:
            raise HTTPError(*self.create_error)
        template = self.template(str(body.get("templateID", "")))
        if template is None:
            raise HTTPError(404, f"template '{body.get('templateID')}' not found")
        sandbox_id = f"fake{next(self._ids)}{secrets.token_hex(4)}"
        box = FakeSandbox(
            sandbox_id,
            network=body.get("allow_internet_access") is not False,
            labels=body.get("metadata") or {},
            env=body.get("envVars") or {},
        )
        box.write_file(f"{HOME}/.profile", PROFILES[template.python].encode())
        timeout = int(body.get("timeout", 15))
        sandbox = Sandbox(
            sandbox_id,
            template,
            box,
            dict(body.get("metadata") or {}),
            secrets.token_hex(16),
            time.monotonic() + timeout,
        )
        with self._lock:
            self.sandboxes[sandbox_id] = sandbox
        if self.on_create is not None:
            self.on_create()
        if self.create_delay:
            time.sleep(self.create_delay)
        return 201, {
            "templateID": template.template_id,
            "sandboxID": sandbox_id,
            "clientID": "fake",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.token,
        }

    def _list(self, environ: Environ) -> tuple[int, Any]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        wanted = {
            urllib.parse.unquote(key): urllib.parse.unquote(value)
            for key, value in urllib.parse.parse_qsl(query.get("metadata", [""])[0])
        }
        listed = []
        for sandbox in self.sandboxes.running():
            if all(sandbox.metadata.get(key) == value for key, value in wanted.items()):
                left = timedelta(seconds=max(0.0, sandbox.ends_at - time.monotonic()))
                listed.append(
                    {
                        "templateID": sandbox.template.template_id,
                        "sandboxID": sandbox.sandbox_id,
                        "clientID": "fake",
                        "startedAt": sandbox.started_at.isoformat(),
                        "endAt": (datetime.now(UTC) + left).isoformat(),
                        "cpuCount": sandbox.template.cpu_count,
                        "memoryMB": sandbox.template.memory_mb,
                        "diskSizeMB": 1024,
                        "state": "running",
                        "envdVersion": ENVD_VERSION,
                        "metadata": sandbox.metadata,
                    }
                )
        return 200, listed

    def _delete(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        if not self.kill(sandbox_id):
            raise HTTPError(404, f"sandbox '{sandbox_id}' not found")
        return 204, None

    def _set_timeout(self, environ: Environ, sandbox_id: str) -> tuple[int, Any]:
        timeout = int(request_json(environ)["timeout"])
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is None:
                raise HTTPError(404, f"sandbox '{sandbox_id}' not found")
            sandbox.ends_at = time.monotonic() + timeout
        return 204, None

    # -- REST: templates ------------------------------------------------------------------------

    def _alias(self, environ: Environ, name: str) -> tuple[int, Any]:
        template = self.template(urllib.parse.unquote(name))
        if template is None:
            raise HTTPError(404, f"template '{name}' not found")
        return 200, {"templateID": template.template_id, "public": False}

    def _request_build(self, environ: Environ) -> tuple[int, Any]:
        body = request_json(environ)
        name = str(body["name"]).split(":", 1)[0]
        sizes = {"cpu_count": body.get("cpuCount", 2), "memory_mb": body.get("memoryMB", 512)}
        template = self.add_template(name, python="none", **sizes)
        template.ready = False
        self.builds += 1
        return 202, {
            "templateID": template.template_id,
            "buildID": f"build-{template.template_id}",
            "public": False,
            "names": [name],
            "tags": ["default"],
            "aliases": [name],
        }

    def _trigger_build(self, environ: Environ, template_id: str, build: str) -> tuple[int, Any]:
        steps = json.dumps(request_json(environ).get("steps", []))
        with self._lock:
            template = self.templates[template_id]
            # What the steps install decides what the fake's image gives the template.
            template.python = "image" if "grpcio" in steps and "protobuf" in steps else "system"
            template.ready = True
        return 202, None

    def _build_status(self, environ: Environ, template_id: str, build: str) -> tuple[int, Any]:
        return 200, {
            "logs": [],
            "logEntries": [],
            "templateID": template_id,
            "buildID": build,
            "status": "ready",
        }

    # -- envd: files ------------------------------------------------------------------------------

    def _upload(self, sandbox: Sandbox, environ: Environ) -> list[dict[str, str]]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        body = request_body(environ)
        ctype = environ.get("CONTENT_TYPE", "")
        files: list[tuple[str, bytes]] = []
        if ctype.startswith("multipart/form-data"):
            for part in form_parts(ctype, body):
                name = query.get("path", [part.get_filename() or ""])[0]
                files.append((name, part.get_payload(decode=True) or b""))
        else:
            files.append((query["path"][0], body))
        written = []
        for path, data in files:
            sandbox.box.write_file(path, data)
            written.append({"name": os.path.basename(path), "type": "file", "path": path})
        return written


# -- envd's process service ---------------------------------------------------------------------


def _event(kind: str, value: Any) -> process_pb.ProcessEvent:
    return process_pb.ProcessEvent(event=Oneof(kind, value))  # type: ignore[arg-type]


class _ProcessService:
    """``process.Process`` over the fake's sandboxes (the SDK's ``ProcessSync`` protocol)."""

    def __init__(self, fake: FakeE2B) -> None:
        self.fake = fake

    def _sandbox(self, ctx: Any) -> Sandbox:
        headers = ctx.request_headers
        with self.fake._lock:
            sandbox = self.fake.sandboxes.get(headers.get("e2b-sandbox-id", ""))
        if sandbox is None:
            raise ConnectError(Code.UNAVAILABLE, "sandbox not found")
        return sandbox

    def _process(self, ctx: Any, selector: Any) -> Process:
        pid = selector.selector.value if selector and selector.selector else None
        process = self._sandbox(ctx).processes.get(pid) if pid is not None else None
        if process is None or process.popen.poll() is not None:
            raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found")
        return process

    def start(self, request: Any, ctx: Any) -> Iterator[Any]:
        sandbox = self._sandbox(ctx)
        config = request.process
        argv = [config.cmd, *config.args]
        cwd = config.cwd if config.has_field("cwd") and config.cwd else HOME
        popen = sandbox.box.exec(argv, env=dict(config.envs or {}), cwd=cwd)
        process = Process(next(self.fake._pids), popen)
        sandbox.processes[process.pid] = process
        if not request.stdin:
            popen.stdin.close()
        yield process_pb.StartResponse(
            event=_event("start", process_pb.ProcessEvent.StartEvent(pid=process.pid))
        )
        for item in output_chunks(popen):
            data = process_pb.ProcessEvent.DataEvent(output=Oneof(*item))  # type: ignore[arg-type]
            yield process_pb.StartResponse(event=_event("data", data))
        code = popen.wait()
        sandbox.processes.pop(process.pid, None)
        end = process_pb.ProcessEvent.EndEvent(
            exit_code=code, exited=code >= 0, status=f"exit status {code}"
        )
        yield process_pb.StartResponse(event=_event("end", end))

    def send_input(self, request: Any, ctx: Any) -> Any:
        process = self._process(ctx, request.process)
        data = request.input.input.value if request.input and request.input.input else b""
        try:
            with process.stdin_lock:
                process.popen.stdin.write(data)
                process.popen.stdin.flush()
        except (OSError, ValueError) as exc:
            raise ConnectError(Code.NOT_FOUND, f"process stdin closed: {exc}") from None
        return process_pb.SendInputResponse()

    def stream_input(self, request: Iterable[Any], ctx: Any) -> Any:
        for message in request:
            event = message.event
            if event is not None and event.field == "data":
                self.send_input(event.value, ctx)
        return process_pb.StreamInputResponse()

    def close_stdin(self, request: Any, ctx: Any) -> Any:
        process = self._process(ctx, request.process)
        with process.stdin_lock, contextlib.suppress(OSError):
            process.popen.stdin.close()
        return process_pb.CloseStdinResponse()

    def send_signal(self, request: Any, ctx: Any) -> Any:
        process = self._process(ctx, request.process)
        with contextlib.suppress(OSError):
            os.killpg(process.popen.pid, 9 if request.signal == process_pb.Signal.SIGKILL else 15)
        return process_pb.SendSignalResponse()

    def list(self, request: Any, ctx: Any) -> Any:
        return process_pb.ListResponse()

    def connect(self, request: Any, ctx: Any) -> Iterator[Any]:
        raise ConnectError(Code.UNIMPLEMENTED, "the fake does not reconnect to processes")

    def update(self, request: Any, ctx: Any) -> Any:
        raise ConnectError(Code.UNIMPLEMENTED, "the fake has no PTYs")
