"""A wire-level fake of Daytona: its REST API, the toolbox and their WebSockets, on 127.0.0.1.

The unmodified ``daytona`` SDK reaches it through its own settings, ``DAYTONA_API_URL``,
``DAYTONA_API_KEY`` and ``DAYTONA_TARGET`` (:meth:`FakeDaytona.environ`); the toolbox's URL
is what the service returns in each sandbox's ``toolboxProxyUrl`` (:attr:`FakeDaytona.public_url`
+ ``/toolbox``), so the fake controls it too. Served, as the SDK calls them:

* REST under ``/api`` (``Authorization: Bearer``): ``POST /sandbox``, ``GET /sandbox?labels=``,
  ``GET|DELETE /sandbox/{id}``, ``POST /sandbox/{id}/last-activity``,
  ``GET /sandbox/{id}/build-logs-url``; the SDK's Socket.IO event stream
  (``/api/socket.io/``) answers 404, which the SDK tolerates (it polls);
* a build's log at that URL, ``/sandboxes/{id}/build-logs`` (``?follow=true``: a chunked
  answer, one line a chunk as the build writes them, that ends with the build);
* the toolbox under ``/toolbox/{id}``: ``POST /files/bulk-upload``, ``POST /files/bulk-download``,
  sessions (``POST /process/session``, ``POST /process/session/{s}/exec``,
  ``GET /process/session/{s}/command/{c}``, ``POST .../input``, ``DELETE /process/session/{s}``)
  with the command's logs over a WebSocket (``GET .../logs?follow=true``: text messages, each
  chunk behind the SDK's stdout/stderr marker), and PTYs (``GET /process/pty/create-connect``:
  one WebSocket, output as binary messages, input messages of at most 64 KiB as the daemon
  reads them, a ``connected`` control message first and the exit code in the close frame;
  ``DELETE /process/pty/{id}``).

Each sandbox is a :class:`rlm_conformance.fakes.FakeSandbox` (without network when the SDK
asked for ``networkBlockAll``); its commands run there, a PTY's shell on a pseudo-terminal of
this machine. The service's lifetimes are enforced with a scaled minute (``minute`` seconds):
``ttlMinutes`` destroys a sandbox that long after its creation whatever its state;
``autoStopInterval`` stops it that long after its last activity (a REST or toolbox request
about it; WebSocket traffic does not count), and ``autoDeleteInterval=0`` (ephemeral) deletes
it when it stops. :attr:`FakeDaytona.ended` says why each sandbox ended.

Images: a sandbox built from a Dockerfile whose steps pip-install grpcio and protobuf gets the
fake image's ``python3`` (with both); another Dockerfile gets the machine's ``python3``
(without grpcio), one from ``busybox`` none at all. Snapshots are looked up in
:attr:`FakeDaytona.snapshots` (name -> ``image``, ``system`` or ``none``). The first create
from a Dockerfile (and context) builds it (:mod:`daytona_builds`): the sandbox is
``pending_build``, ``building_snapshot`` for :attr:`FakeDaytona.build_seconds`, then
``starting`` and ``started`` (or ``build_failed`` when :attr:`FakeDaytona.build_failure` is
set); later creates from the same Dockerfile start at once. :attr:`FakeDaytona.builds` holds
every build.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import math
import os
import secrets
import struct
import subprocess
import termios
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from daytona_builds import SANDBOX_STATES, Build, build_key
from rlm_conformance import fakes
from rlm_conformance.fake_http import ChunkedBody, ClosesConnections, HTTPError, form_parts
from rlm_conformance.fake_service import SandboxTable
from rlm_conformance.fakes import HOME, IMAGE, FakeSandbox
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import generate_accept_token

STDOUT_PREFIX = b"\x01\x01\x01"
STDERR_PREFIX = b"\x02\x02\x02"
"""The markers of the toolbox's session logs (``daytona.common.process``)."""

PTY_READ_LIMIT = 64 * 1024
"""The daemon's read limit of one PTY input message (``readLimit``)."""

TOOLS = f"{HOME}/.tools"
"""The ``PATH`` of a sandbox without Python: a shell's tools, and no ``python3``."""

PATHS = {
    "image": f"{IMAGE}/bin:/usr/local/bin:/usr/bin:/bin",  # python3 with grpcio and protobuf
    "system": "/usr/local/bin:/usr/bin:/bin",  # the machine's python3, which has no grpcio
    "none": TOOLS,  # no python3 at all
}
"""The ``PATH`` of each kind of image: session commands get it in their environment, and
the PTY's login shell from ``~/.profile`` (the machine's ``/etc/profile`` resets it)."""


# -- sandboxes --------------------------------------------------------------------------------


class PtySandbox(FakeSandbox):
    """A :class:`FakeSandbox` that can also run a command on a pseudo-terminal."""

    def exec_pty(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, size: tuple[int, int]
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Start ``argv`` in the sandbox with a new PTY as its stdin, stdout and stderr;
        returns the process and the PTY's master end (the caller closes it)."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        command = [
            "unshare", *self._namespaces(), "--kill-child=SIGKILL",
            "sh", "-c", fakes._enter_root(self.root), "sh", cwd, *argv,
        ]  # fmt: skip
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": HOME,
            "LANG": "C.UTF-8",
            **self.env,
            **env,
        }
        try:
            with self._lock:
                self._check_alive()
                process = subprocess.Popen(
                    command,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=environment,
                    start_new_session=True,
                )
                self._processes.append(process)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return process, master


@dataclass
class Command:
    """A command run in a session: its output as the toolbox logs it."""

    command_id: str
    command: str
    popen: subprocess.Popen[bytes]
    log: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)
    stdin_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Sandbox:
    """One sandbox of the fake."""

    sandbox_id: str
    box: PtySandbox
    labels: dict[str, str]
    python: str
    body: dict[str, Any]
    created: float
    last_activity: float
    state: str = "started"
    states: list[str] = field(default_factory=list)
    """Every state the sandbox has been in, in order."""
    build: Build | None = None
    """The build of its image (``None``: from a snapshot)."""
    error_reason: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    sessions: dict[str, dict[str, Command]] = field(default_factory=dict)
    ptys: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states.append(self.state)

    def move(self, state: str) -> None:
        """Enter ``state`` (under the fake's lock)."""
        if state != self.state:
            self.state = state
            self.states.append(state)


class FakeDaytona:
    """The fake service. ``start()`` serves it; ``stop()`` destroys every sandbox and stops.

    ``minute``: the seconds a minute of the service's lifetimes lasts here.
    ``create_error``: when set to ``(status, message)``, ``POST /sandbox`` answers with that
    error (``upload_error``: ``POST /files/bulk-upload`` does). ``create_delay``: seconds
    the create call waits after the sandbox was created, before answering, and
    ``on_create`` is called then (to cut a start short in the middle).
    ``pty_connect_delays``: seconds each next PTY waits, once its WebSocket is open, before
    it says it is connected (one per PTY, in order; none left: no wait; ``math.inf``: it
    never does, and ends when it is killed).
    ``build_seconds``: how long building an image takes; ``build_failure``: when set, the
    builds started from then on fail with that reason (a failed build is not reused).
    """

    def __init__(self, minute: float = 60.0) -> None:
        self.minute = minute
        self.api_key = "dtn_" + secrets.token_hex(20)
        self.public_url: str | None = None
        """The base URL the SDK is told for the toolbox (default: :attr:`url`); a test
        proxy between the SDK and the fake sets its own."""
        self.snapshots: dict[str, str] = {}
        self._lock = threading.RLock()
        self.sandboxes: SandboxTable[Sandbox] = SandboxTable(self._lock)
        self.ended: dict[str, str] = {}
        """Why each sandbox ended: ``deleted``, ``ttl`` or ``auto-stop``."""
        self.stopped: list[str] = []
        """Ids of sandboxes stopped by their auto-stop interval (ephemeral ones are deleted)."""
        self.calls: list[str] = []
        """``METHOD path`` of every request (toolbox paths without the sandbox id, prefixed
        ``toolbox``)."""
        self.bodies: list[dict[str, Any]] = []
        """The JSON bodies of ``POST /sandbox``."""
        self.create_error: tuple[int, str] | None = None
        self.create_delay = 0.0
        self.upload_error: tuple[int, str] | None = None
        """When set, ``POST /files/bulk-upload`` answers with that error."""
        self.on_create: Callable[[], object] | None = None
        self.pty_connect_delays: list[float] = []
        self.build_seconds = 0.5
        self.build_failure: str | None = None
        self.builds: list[Build] = []
        """Every image build, in the order they started."""
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._stopped = threading.Event()

    # -- running ------------------------------------------------------------------------------

    def start(self) -> FakeDaytona:
        """Serve on a free loopback port; a reaper thread enforces the lifetimes."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._reap, name="fake-daytona-reaper", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """The base URL the fake serves on."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self) -> dict[str, str]:
        """The environment variables that point the SDK at this fake."""
        return {
            "DAYTONA_API_URL": f"{self.url}/api",
            "DAYTONA_API_KEY": self.api_key,
            "DAYTONA_TARGET": "fake",
        }

    def stop(self) -> None:
        """Destroy every sandbox and stop serving."""
        self._stopped.set()
        for sandbox_id in self.live():
            self.destroy(sandbox_id, "deleted")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()

    def _reap(self) -> None:
        while not self._stopped.wait(0.05):
            now = time.monotonic()
            with self._lock:
                building = [build for build in self.builds if not build.done]
            for build in building:
                build.advance(now)
            for sandbox in self.sandboxes.running():
                self._follow_build(sandbox)
                ttl = sandbox.body.get("ttlMinutes") or 0
                stop = sandbox.body.get("autoStopInterval")
                stop = 15 if stop is None else stop
                if ttl and now >= sandbox.created + ttl * self.minute:
                    self.destroy(sandbox.sandbox_id, "ttl")
                elif (
                    sandbox.state == "started"
                    and stop
                    and now >= sandbox.last_activity + stop * self.minute
                ):
                    self._auto_stop(sandbox)

    def _auto_stop(self, sandbox: Sandbox) -> None:
        if sandbox.body.get("autoDeleteInterval") == 0:
            self.destroy(sandbox.sandbox_id, "auto-stop")
            return
        sandbox.box.kill()  # a stopped sandbox runs nothing
        with self._lock:
            sandbox.move("stopped")
            self.stopped.append(sandbox.sandbox_id)

    def _follow_build(self, sandbox: Sandbox) -> None:
        """A sandbox waiting for its image takes the state of the build, and one that
        was ``starting`` is ``started`` a tick of the clock later."""
        build = sandbox.build
        if build is None:
            return
        with self._lock:
            if sandbox.state == "starting":
                sandbox.move("started")
            elif sandbox.state in ("pending_build", "building_snapshot"):
                sandbox.move(SANDBOX_STATES[build.state])
                if build.state == "failed":
                    sandbox.error_reason = build.failure

    def _build_for(self, body: dict[str, Any]) -> Build | None:
        """The build of the sandbox's image: the last one of the same Dockerfile and
        context that has not failed, or a new one (``None`` for a snapshot)."""
        info = body.get("buildInfo")
        if not info:
            return None
        key = build_key(info)
        with self._lock:
            for build in reversed(self.builds):
                if build.key == key and build.state != "failed":
                    return build
            build = Build(key, info, self.build_seconds, self.build_failure)
            self.builds.append(build)
            return build

    # -- the service's state ------------------------------------------------------------------

    def live(self) -> list[str]:
        """Ids of the sandboxes not yet destroyed (started or stopped)."""
        return self.sandboxes.ids()

    def destroy(self, sandbox_id: str, reason: str) -> bool:
        """Destroy a sandbox (every process in it); ``False`` if there was none."""

        def record(sandbox: Sandbox) -> None:
            sandbox.move("destroyed")
            self.ended[sandbox_id] = reason

        return self.sandboxes.end(sandbox_id, record)

    def _sandbox(self, sandbox_id: str, activity: bool = True) -> Sandbox:
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is None:
                raise HTTPError(404, f"Sandbox with ID or name {sandbox_id} not found")
            if activity:
                sandbox.last_activity = time.monotonic()
        return sandbox

    def _dto(self, sandbox: Sandbox) -> dict[str, Any]:
        body = sandbox.body
        return {
            "id": sandbox.sandbox_id,
            "organizationId": "fake-organization",
            "name": sandbox.sandbox_id,
            "snapshot": body.get("snapshot"),
            "user": "daytona",
            "env": body.get("env") or {},
            "labels": sandbox.labels,
            "public": False,
            "networkBlockAll": bool(body.get("networkBlockAll")),
            "networkAllowList": body.get("networkAllowList"),
            "kvm": False,
            "target": body.get("target") or "fake",
            "cpu": body.get("cpu") or 1,
            "gpu": 0,
            "memory": body.get("memory") or 1,
            "disk": body.get("disk") or 3,
            "state": sandbox.state,
            "errorReason": sandbox.error_reason,
            "buildInfo": None if sandbox.build is None else sandbox.build.info(),
            "autoStopInterval": body.get("autoStopInterval", 15),
            "autoDeleteInterval": body.get("autoDeleteInterval", -1),
            "createdAt": sandbox.created_at,
            "updatedAt": sandbox.created_at,
            "toolboxProxyUrl": f"{self.public_url or self.url}/toolbox",
        }

    # -- HTTP ---------------------------------------------------------------------------------

    def handle(self, request: _Handler) -> None:
        """Answer one request (any method)."""
        parts = urllib.parse.urlsplit(request.path)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        method = request.command
        segments = path.strip("/").split("/")
        toolbox = segments[0] == "toolbox" and len(segments) > 2
        shown = "/" + "/".join(segments[2:]) if toolbox else path
        self.calls.append(f"{'toolbox ' if toolbox else ''}{method} {shown}")
        try:
            body = request.read_body()
            auth = request.headers.get("Authorization", "")
            if not secrets.compare_digest(auth, f"Bearer {self.api_key}"):
                raise HTTPError(401, "Unauthorized")
            if toolbox:
                sandbox = self._sandbox(segments[1])
                if sandbox.state != "started":
                    raise HTTPError(400, f"Sandbox {sandbox.sandbox_id} is not started")
                self._toolbox(request, sandbox, method, shown, query, body)
            elif segments[0] == "api" and len(segments) > 1 and segments[1] != "socket.io":
                self._rest(request, method, segments[1:], query, body)
            elif segments[0] == "sandboxes" and segments[2:] == ["build-logs"] and method == "GET":
                self._build_logs(request, segments[1], query)
            else:
                raise HTTPError(404, f"Cannot {method} {path}")
        except HTTPError as exc:
            request.reply(exc.status, {"statusCode": exc.status, "message": exc.message})

    def _rest(
        self,
        request: _Handler,
        method: str,
        route: list[str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> None:
        if route == ["sandbox"] and method == "POST":
            request.reply(200, self._create(json.loads(body or b"{}")))
        elif route == ["sandbox"] and method == "GET":
            wanted = json.loads(query.get("labels", ["{}"])[0])
            with self._lock:
                listed = [
                    self._dto(s)
                    for s in self.sandboxes.values()
                    if all(s.labels.get(k) == v for k, v in wanted.items())
                ]
            request.reply(200, {"items": listed, "nextCursor": None})
        elif len(route) == 2 and route[0] == "sandbox" and method == "GET":
            request.reply(200, self._dto(self._sandbox(route[1])))
        elif len(route) == 2 and route[0] == "sandbox" and method == "DELETE":
            sandbox = self._sandbox(route[1])
            self.destroy(sandbox.sandbox_id, "deleted")
            request.reply(200, self._dto(sandbox))
        elif route[2:] == ["last-activity"] and method == "POST":
            self._sandbox(route[1])
            request.reply(201, None)
        elif route[2:] == ["build-logs-url"] and method == "GET":
            sandbox_id = self._sandbox(route[1]).sandbox_id
            url = f"{self.public_url or self.url}/sandboxes/{sandbox_id}/build-logs"
            request.reply(200, {"url": url})
        else:
            raise HTTPError(404, f"Cannot {method} /api/{'/'.join(route)}")

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        if self.create_error is not None:
            raise HTTPError(*self.create_error)
        python = self._python(body)
        sandbox_id = f"fake{next(self._ids)}{secrets.token_hex(4)}"
        labels = dict(body.get("labels") or {})
        box = PtySandbox(
            sandbox_id,
            network=not body.get("networkBlockAll"),
            labels=labels,
            env=body.get("env") or {},
        )
        box.write_file(f"{HOME}/.profile", f"export PATH={PATHS[python]}\n".encode())
        os.makedirs(box.path(TOOLS))
        for tool in ("/bin/sh", "/usr/bin/stty", "/usr/bin/env"):
            os.symlink(tool, box.path(f"{TOOLS}/{os.path.basename(tool)}"))
        now = time.monotonic()
        build = self._build_for(body)
        state = "started" if build is None or build.state == "built" else "pending_build"
        sandbox = Sandbox(sandbox_id, box, labels, python, body, now, now, state, build=build)
        with self._lock:
            self.sandboxes[sandbox_id] = sandbox
        if self.on_create is not None:
            self.on_create()
        if self.create_delay:
            time.sleep(self.create_delay)
        return self._dto(sandbox)

    def _python(self, body: dict[str, Any]) -> str:
        """What the sandbox's image gives it: ``image``, ``system`` or ``none``."""
        build = body.get("buildInfo") or {}
        dockerfile = str(build.get("dockerfileContent") or "")
        if dockerfile:
            if "busybox" in dockerfile:
                return "none"
            installs = " ".join(line for line in dockerfile.splitlines() if "pip install" in line)
            return "image" if "grpcio" in installs and "protobuf" in installs else "system"
        snapshot = body.get("snapshot")
        if snapshot is None:
            return "system"  # the default snapshot: Python without the agent's packages
        if snapshot not in self.snapshots:
            raise HTTPError(404, f"Snapshot {snapshot} not found")
        return self.snapshots[snapshot]

    def _build_logs(self, request: _Handler, sandbox_id: str, query: dict[str, list[str]]) -> None:
        """The log of the sandbox's build: what it wrote so far or, with ``follow=true``,
        also what it writes until it ends (or the sandbox or the fake does)."""
        build = self._sandbox(sandbox_id).build
        if build is None:
            raise HTTPError(404, f"Sandbox {sandbox_id} was not built from an image")
        lines: Iterable[str]
        if query.get("follow") == ["true"]:

            def alive() -> bool:
                return not self._stopped.is_set() and sandbox_id in self.sandboxes

            lines = build.follow(alive)
        else:
            with build.changed:
                lines = list(build.log)
        request.stream("text/plain; charset=utf-8", (f"{line}\n".encode() for line in lines))

    # -- the toolbox ----------------------------------------------------------------------------

    def _toolbox(
        self,
        request: _Handler,
        sandbox: Sandbox,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: bytes,
    ) -> None:
        route = path.strip("/").split("/")
        if (method, path) == ("POST", "/files/bulk-upload"):
            if self.upload_error is not None:
                raise HTTPError(*self.upload_error)
            self._upload(sandbox, request.headers.get("Content-Type", ""), body)
            request.reply(200, None)
        elif (method, path) == ("POST", "/files/bulk-download"):
            request.reply_raw(200, *self._download(sandbox, json.loads(body)["paths"]))
        elif (method, path) == ("GET", "/process/pty/create-connect"):
            self._pty(request, sandbox, query)
        elif route[:2] == ["process", "pty"] and method == "DELETE":
            process = sandbox.ptys.pop(route[2], None)
            if process is None:
                raise HTTPError(404, "PTY session not found")
            _kill_group(process)
            request.reply(200, {"message": "PTY session deleted"})
        elif (method, path) == ("POST", "/process/session"):
            sandbox.sessions[json.loads(body)["sessionId"]] = {}
            request.reply(201, None)
        elif route[:2] == ["process", "session"] and len(route) >= 3:
            commands = sandbox.sessions.get(route[2])
            if commands is None:
                raise HTTPError(404, "session not found")
            self._session(request, sandbox, commands, method, route[3:], body)
        else:
            raise HTTPError(404, f"no toolbox route {method} {path}")

    def _upload(self, sandbox: Sandbox, ctype: str, body: bytes) -> None:
        paths: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for part in form_parts(ctype, body):
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True) or b""
            if name.endswith(".path"):
                paths[name[: -len(".path")]] = payload.decode()
            elif name.endswith(".file"):
                files[name[: -len(".file")]] = payload
        for key, data in files.items():
            try:
                sandbox.box.write_file(paths[key], data)
            except (PermissionError, ProcessLookupError) as exc:
                raise HTTPError(400, str(exc)) from None

    def _download(self, sandbox: Sandbox, paths: list[str]) -> tuple[str, bytes]:
        boundary = uuid.uuid4().hex
        out = bytearray()
        for path in paths:
            try:
                data, name, ctype = sandbox.box.read_file(path), "file", "application/octet-stream"
            except (OSError, PermissionError) as exc:
                data, name, ctype = (
                    json.dumps({"message": str(exc), "statusCode": 404}).encode(),
                    "error",
                    "application/json",
                )
            out += f"--{boundary}\r\n".encode()
            out += f'Content-Disposition: form-data; name="{name}"; filename="{path}"\r\n'.encode()
            out += f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        out += f"--{boundary}--\r\n".encode()
        return f"multipart/form-data; boundary={boundary}", bytes(out)

    # -- sessions -------------------------------------------------------------------------------

    def _session(
        self,
        request: _Handler,
        sandbox: Sandbox,
        commands: dict[str, Command],
        method: str,
        route: list[str],
        body: bytes,
    ) -> None:
        if not route and method == "DELETE":
            session = next(k for k, v in sandbox.sessions.items() if v is commands)
            sandbox.sessions.pop(session, None)
            for command in commands.values():
                _kill_group(command.popen)
            request.reply(204, None)
        elif route == ["exec"] and method == "POST":
            request_body = json.loads(body)
            command = self._run(sandbox, str(request_body["command"]))
            commands[command.command_id] = command
            if request_body.get("runAsync") or request_body.get("async"):
                request.reply(202, {"cmdId": command.command_id})
                return
            with command.changed:
                command.changed.wait_for(lambda: command.exit_code is not None)
            output = bytes(command.log).replace(STDOUT_PREFIX, b"").replace(STDERR_PREFIX, b"")
            reply = {"cmdId": command.command_id, "output": output.decode(errors="replace")}
            request.reply(200, {**reply, "exitCode": command.exit_code})
        elif len(route) >= 2 and route[0] == "command" and route[1] in commands:
            command = commands[route[1]]
            if route[2:] == [] and method == "GET":
                reply = {"id": command.command_id, "command": command.command}
                request.reply(200, {**reply, "exitCode": command.exit_code})
            elif route[2:] == ["input"] and method == "POST":
                self._input(command, json.loads(body)["data"])
                request.reply(204, None)
            elif route[2:] == ["logs"] and request.upgrade():
                self._follow_logs(request.websocket(), command)
            else:
                raise HTTPError(404, "no such command route")
        else:
            raise HTTPError(404, "command not found")

    def _run(self, sandbox: Sandbox, command_line: str) -> Command:
        try:
            # The image's PATH, set inside: the sandbox is entered with the machine's.
            script = f"export PATH={PATHS[sandbox.python]}; {command_line}"
            popen = sandbox.box.exec(["/bin/sh", "-c", script])
        except ProcessLookupError as exc:
            raise HTTPError(400, str(exc)) from None
        command = Command(uuid.uuid4().hex, command_line, popen)
        readers = [
            threading.Thread(target=_log, args=(command, popen.stdout, STDOUT_PREFIX), daemon=True),
            threading.Thread(target=_log, args=(command, popen.stderr, STDERR_PREFIX), daemon=True),
        ]
        for reader in readers:
            reader.start()

        def wait() -> None:
            code = popen.wait()
            for reader in readers:
                reader.join()
            with command.changed:
                command.exit_code = code if code >= 0 else 128 - code
                command.changed.notify_all()

        threading.Thread(target=wait, daemon=True).start()
        return command

    @staticmethod
    def _input(command: Command, data: str) -> None:
        if command.exit_code is not None:
            raise HTTPError(410, "command has exited")
        try:
            with command.stdin_lock:
                assert command.popen.stdin is not None
                command.popen.stdin.write(data.encode())
                command.popen.stdin.flush()
        except (OSError, ValueError) as exc:
            raise HTTPError(410, f"command stdin closed: {exc}") from None

    @staticmethod
    def _follow_logs(ws: WebSocket, command: Command) -> None:
        """Send the log so far, then what comes, then close (1000) when the command ended."""
        sent = 0
        while True:
            with command.changed:
                command.changed.wait_for(
                    lambda sent=sent: len(command.log) > sent or command.exit_code is not None,
                    timeout=1.0,
                )
                chunk, done = bytes(command.log[sent:]), command.exit_code is not None
            if chunk:
                sent += len(chunk)
                if not ws.send(chunk.decode(errors="replace")):
                    return
            elif done:
                ws.close(1000, "")
                return
            elif ws.closed:
                return

    # -- PTYs -----------------------------------------------------------------------------------

    def _pty(self, request: _Handler, sandbox: Sandbox, query: dict[str, list[str]]) -> None:
        session_id = query["id"][0]
        if session_id in sandbox.ptys:
            raise HTTPError(409, f"PTY session with ID '{session_id}' already exists")
        envs = {"TERM": "xterm-256color"}
        protocols = request.headers.get("Sec-WebSocket-Protocol", "")
        for token in (t.strip() for t in protocols.split(",")):
            if token.startswith("X-Daytona-Pty-Envs~"):
                encoded = token.split("~", 1)[1]
                envs |= json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        size = (int(query.get("cols", ["80"])[0]), int(query.get("rows", ["24"])[0]))
        cwd = query.get("cwd", [HOME])[0]
        try:
            process, master = sandbox.box.exec_pty(
                ["/bin/sh", "-i", "-l"], env=envs, cwd=cwd, size=size
            )
        except ProcessLookupError as exc:
            raise HTTPError(400, str(exc)) from None
        sandbox.ptys[session_id] = process
        ws = request.websocket()
        with self._lock:
            delay = self.pty_connect_delays.pop(0) if self.pty_connect_delays else 0.0
        try:
            if math.isinf(delay):  # never connected: it ends when it is killed
                process.wait()
                return
            time.sleep(delay)
            ws.send(json.dumps({"type": "control", "status": "connected"}))
            threading.Thread(target=_pty_input, args=(ws, master), daemon=True).start()
            while True:
                try:
                    data = os.read(master, 32 * 1024)
                except OSError:  # EIO: every process holding the PTY is gone
                    break
                if not data or not ws.send(data):
                    break
        finally:
            os.close(master)
            code = process.wait()
            sandbox.ptys.pop(session_id, None)
            code = code if code >= 0 else 128 - code
            reason = {"exitCode": code} if code == 0 else {"exitCode": code, "exitReason": "exit"}
            ws.close(1000 if code == 0 else 1011, json.dumps(reason))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(process.pid, 9)


def _log(command: Command, pipe: Any, prefix: bytes) -> None:
    try:
        while chunk := os.read(pipe.fileno(), 1 << 16):
            with command.changed:
                command.log += prefix + chunk
                command.changed.notify_all()
    except (OSError, ValueError):
        pass


def _pty_input(ws: WebSocket, master: int) -> None:
    """Write what the client sends to the PTY (a message over the read limit ends it)."""
    for message in ws.messages(limit=PTY_READ_LIMIT):
        data = message.encode() if isinstance(message, str) else message
        try:
            while data:
                data = data[os.write(master, data) :]
        except OSError:
            return


# -- the HTTP server and its WebSockets ----------------------------------------------------------


class WebSocket:
    """The server end of one WebSocket (after the 101 answer), with wsproto framing."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler
        self._conn = Connection(ConnectionType.SERVER)
        self._send_lock = threading.Lock()
        self.closed = False

    def _write(self, event: Any) -> bool:
        with self._send_lock:
            if self.closed:
                return False
            try:
                self._handler.wfile.write(self._conn.send(event))
                self._handler.wfile.flush()
            except (OSError, ValueError):
                self.closed = True
                return False
            if isinstance(event, CloseConnection):
                self.closed = True
        return True

    def send(self, data: bytes | str) -> bool:
        """Send one message; ``False`` when the connection is gone."""
        event: Message[Any] = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        return self._write(event)

    def close(self, code: int, reason: str) -> None:
        """Send the close frame (once)."""
        self._write(CloseConnection(code, reason))

    def messages(self, limit: int | None = None) -> Iterator[bytes | str]:
        """The client's messages until it closes (or sends one larger than ``limit``)."""
        parts: list[Any] = []
        size = 0
        while True:
            try:
                data = self._handler.rfile.read1(1 << 16)
            except (OSError, ValueError):
                data = b""
            if not data:
                self.closed = True
                return
            self._conn.receive_data(data)
            for event in self._conn.events():
                if isinstance(event, Ping):
                    self._write(event.response())
                elif isinstance(event, CloseConnection):
                    self._write(event.response())
                    return
                elif isinstance(event, Message):
                    parts.append(event.data)
                    size += len(event.data)
                    if limit is not None and size > limit:
                        self.close(1009, "message too big")
                        return
                    if event.message_finished:
                        joined = (
                            "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                        )
                        parts, size = [], 0
                        yield joined


class _Server(ClosesConnections, ThreadingHTTPServer):
    fake: FakeDaytona

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a killed host, a closed pool): not news."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def read_body(self) -> bytes:
        """The request's body (sized or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return ChunkedBody(self.rfile).read()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: Any) -> None:
        """A JSON answer (none for ``None``)."""
        data = b"" if body is None else json.dumps(body).encode()
        self.reply_raw(status, "application/json", data)

    def reply_raw(self, status: int, ctype: str, data: bytes) -> None:
        """An answer with this content type and body."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, ctype: str, chunks: Iterable[bytes]) -> None:
        """A chunked answer, each chunk sent as it comes (the connection closes after it)."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass  # the client went away

    def upgrade(self) -> bool:
        """Whether this is a WebSocket upgrade request."""
        return self.headers.get("Upgrade", "").lower() == "websocket"

    def websocket(self) -> WebSocket:
        """Accept the upgrade (no subprotocol chosen, as the daemon does)."""
        if not self.upgrade():
            raise HTTPError(400, "expected a WebSocket upgrade")
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header(
            "Sec-WebSocket-Accept",
            generate_accept_token(self.headers["Sec-WebSocket-Key"].encode()),
        )
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        return WebSocket(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass
