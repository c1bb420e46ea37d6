"""A wire-level fake of Modal's service, for the unmodified ``modal`` SDK.

One grpclib server on 127.0.0.1 serves both services the SDK talks to, built on the
servicer base classes the ``modal`` wheel ships: the control plane (``ModalClientBase``:
apps, images, auth tokens, sandboxes, tags, listing) and the worker's task command router
(``TaskCommandRouterBase``: exec, stdio, stdin). The SDK reaches it through its own settings
(:meth:`ModalFake.environ`: ``MODAL_SERVER_URL`` plus token variables); the sandbox's
``command_router_access`` points back at the same server (``http://`` is accepted because
the server URL is localhost).

Each sandbox is a :class:`~rlm_conformance.fakes.FakeSandbox`: an isolated local process
tree whose network is off when the SDK asked for ``block_network``. Exec runs the command
there and relays its stdin and stdout byte for byte, as the router does (offsets included).
``filesystem.write_bytes`` execs Modal's in-sandbox fs tool; the fake plays that tool and
writes the bytes with :meth:`FakeSandbox.write_file`. Server-side lifetimes are enforced:
a sandbox past its ``timeout``, or idle (no exec running) past its ``idle_timeout``, is
killed, as Modal does. Any RPC the fake does not implement fails loudly (``UNIMPLEMENTED``)
and is recorded in :attr:`ModalFake.unimplemented`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpclib.server
from grpclib import GRPCError, Status
from modal_proto import api_grpc, api_pb2, task_command_router_grpc
from modal_proto import task_command_router_pb2 as sr_pb2
from rlm_conformance.fakes import HOME, FakeSandbox

FS_TOOLS = "/__modal/.bin/modal-sandbox-fs-tools"
"""The in-sandbox tool the SDK execs for file operations."""

TOKEN_ID = "ak-fake-token-id"
TOKEN_SECRET = "as-fake-token-secret"
BUILDER_VERSION = "2025.06"
READ_CHUNK = 1 << 20
"""Most bytes of output sent in one ``TaskExecStdioRead`` message."""

_OK = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
_TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED
_TIMEOUT = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT


def _jwt(subject: str, lifetime: float = 3600.0) -> str:
    """An unsigned JWT with an ``exp`` claim (the SDK reads ``exp`` to plan refreshes)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": subject, "exp": int(time.time() + lifetime)}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.fake"


class _Exec:
    """One exec'd process: its output kept by offset, its stdin written in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self.loop = loop
        self.on_change = on_change
        self.output: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
        self.closed: dict[int, bool] = {0: False, 1: False}
        self.stdin_offset = 0
        self.stdin_closed = False
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []

    # called from any thread
    def add_output(self, fd: int, data: bytes) -> None:
        with self._lock:
            self.output[fd] += data
        self.loop.call_soon_threadsafe(self._wake)

    def end_output(self, fd: int) -> None:
        with self._lock:
            self.closed[fd] = True
        self.loop.call_soon_threadsafe(self._wake)

    def finish(self, returncode: int) -> None:
        with self._lock:
            self.returncode = returncode
            self.closed = {0: True, 1: True}
        self.loop.call_soon_threadsafe(self._wake)

    # on the loop
    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.on_change()

    async def changed(self) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def read(self, fd: int, offset: int) -> tuple[bytes, bool]:
        with self._lock:
            return bytes(self.output[fd][offset : offset + READ_CHUNK]), self.closed[fd]

    async def write_stdin(self, offset: int, data: bytes, eof: bool) -> None:
        """Write ``data`` (which starts at ``offset``) once; a retried write is skipped."""
        if offset > self.stdin_offset:
            raise GRPCError(Status.OUT_OF_RANGE, f"stdin offset {offset} > {self.stdin_offset}")
        data = data[self.stdin_offset - offset :]
        self.stdin_offset += len(data)
        await self._write(data, eof)
        if eof:
            self.stdin_closed = True

    async def _write(self, data: bytes, eof: bool) -> None:
        raise NotImplementedError


class _ProcessExec(_Exec):
    """An exec running a real process in a :class:`FakeSandbox`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[], None],
        process: subprocess.Popen[bytes],
    ) -> None:
        super().__init__(loop, on_change)
        self.process = process
        self._stdin_lock = threading.Lock()
        pipes = [(0, process.stdout), (1, process.stderr)]
        self._readers = [
            threading.Thread(target=self._pump, args=(fd, pipe), daemon=True) for fd, pipe in pipes
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._reap, daemon=True).start()

    def _pump(self, fd: int, pipe: Any) -> None:
        try:
            while True:
                data = pipe.read1(READ_CHUNK)
                if not data:
                    break
                self.add_output(fd, data)
        except (OSError, ValueError):
            pass
        finally:
            self.end_output(fd)

    def _reap(self) -> None:
        returncode = self.process.wait()
        for reader in self._readers:
            reader.join()
        self.finish(returncode)

    async def _write(self, data: bytes, eof: bool) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write_blocking, data, eof)

    def _write_blocking(self, data: bytes, eof: bool) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        with self._stdin_lock:
            try:  # a process that has exited drops its input, as a pipe does
                if data:
                    stdin.write(data)
                    stdin.flush()
                if eof:
                    stdin.close()
            except (OSError, ValueError):
                pass


class _FsToolExec(_Exec):
    """Modal's fs tool, played by the fake: ``{"WriteFile": {"path": P}}`` writes stdin to
    ``P`` in the sandbox once stdin is closed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[], None],
        sandbox: FakeSandbox,
        command: str,
        corrupt: bool,
    ) -> None:
        super().__init__(loop, on_change)
        self.sandbox = sandbox
        self.command = json.loads(command)
        self.corrupt = corrupt
        self.data = bytearray()

    async def _write(self, data: bytes, eof: bool) -> None:
        self.data += data
        if not eof:
            return
        path = self.command.get("WriteFile", {}).get("path")
        if path is None:
            raise GRPCError(Status.UNIMPLEMENTED, f"fake fs tool: {self.command}")
        payload = bytes(self.data[: len(self.data) // 2]) if self.corrupt else bytes(self.data)
        if self.sandbox.killed:
            raise GRPCError(Status.NOT_FOUND, f"sandbox {self.sandbox.id} was terminated")
        try:
            self.sandbox.write_file(path, payload)
            if self.sandbox.killed:  # terminated meanwhile: its files are gone, as on Modal
                shutil.rmtree(self.sandbox.root, ignore_errors=True)
        except OSError as exc:
            self.add_output(1, json.dumps({"error": str(exc)}).encode())
            self.finish(1)
        else:
            self.finish(0)


@dataclass
class FakeModalSandbox:
    """The fake's record of one sandbox."""

    id: str
    task_id: str
    app_id: str
    box: FakeSandbox
    definition: api_pb2.Sandbox
    tags: dict[str, str]
    created_at: float
    last_active: float
    execs: dict[str, _Exec] = field(default_factory=dict)
    result: api_pb2.GenericResult | None = None
    ending: bool = False
    """Being terminated: its result is set once its processes and files are gone."""
    """Set once the sandbox has ended (terminated, timed out or idle)."""

    @property
    def running_execs(self) -> int:
        return sum(1 for e in self.execs.values() if e.returncode is None)


class ModalFake:
    """The fake service. :meth:`start` it, point the SDK at :meth:`environ`, :meth:`stop`.

    Knobs for failure tests: :attr:`fail_create` (``SandboxCreateV2`` fails with that
    message), :attr:`missing_commands` (commands the image lacks: exec'ing one exits 127
    with ``not found`` on stderr), :attr:`corrupt_uploads` (the fs tool writes half the
    bytes), :attr:`fail_uploads` (the fs tool fails), :attr:`delays` and :attr:`hooks`
    (hold an RPC, or act when it arrives).
    """

    def __init__(self, reap_every: float = 0.2) -> None:
        self.reap_every = reap_every
        self.sandboxes: dict[str, FakeModalSandbox] = {}
        self.apps: dict[str, str] = {}
        self.images: dict[bytes, str] = {}
        self.image_builds = 0
        """How many image layers were built (a cached layer is not built again)."""
        self.calls: list[str] = []
        """Every RPC served, by name, in order."""
        self.unimplemented: list[str] = []
        self.fail_create: str | None = None
        self.missing_commands: set[str] = set()
        self.corrupt_uploads = False
        self.fail_uploads = False
        self.delays: dict[str, float] = {}
        """Seconds to hold each call of an RPC (by name) before serving it."""
        self.hooks: dict[str, Callable[[], None]] = {}
        """Called (on a thread) when an RPC of that name arrives, before it is served."""
        self.max_stdin_write = 0
        """The most bytes one ``TaskExecStdinWrite`` carried."""
        self.url = ""
        self.router_url: str | None = None
        """The command router's URL given to the SDK (``None``: :attr:`url`); a proxy in
        front of the fake sets its own, so the exec's traffic crosses it too."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpclib.server.Server | None = None
        self._thread: threading.Thread | None = None
        self._reaping: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ModalFake:
        """Serve on a free port of 127.0.0.1 from a thread of its own."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # pragma: no cover - start-up failure
                failure.append(exc)
            finally:
                started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="modal-fake", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        api = _api_servicer(self)
        router = _router_servicer(self)
        self._server = grpclib.server.Server([api, router])
        await self._server.start("127.0.0.1", 0)
        sockets = self._server._server.sockets if self._server._server else ()
        port = next(iter(sockets)).getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._reaping = asyncio.get_running_loop().create_task(self._reaper())

    def environ(self) -> dict[str, str]:
        """The variables that point the ``modal`` SDK at this fake."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": TOKEN_ID,
            "MODAL_TOKEN_SECRET": TOKEN_SECRET,
        }

    def stop(self) -> None:
        """Kill every sandbox and stop serving."""
        for record in list(self.sandboxes.values()):
            self._end(record, _TERMINATED)
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._reaping is not None:
                self._reaping.cancel()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def reset(self) -> None:
        """Clear the failure knobs and the call log (between tests)."""
        self.fail_create = None
        self.missing_commands = set()
        self.corrupt_uploads = self.fail_uploads = False
        self.delays = {}
        self.hooks = {}
        self.calls.clear()
        self.unimplemented.clear()

    # -- what tests look at -------------------------------------------------------------------

    def live(self, tag: str | None = None) -> list[str]:
        """Ids of the sandboxes still running (with a tag of value ``tag``, when given)."""
        with self._lock:
            return sorted(
                s.id
                for s in self.sandboxes.values()
                if s.result is None and (tag is None or tag in s.tags.values())
            )

    def record(self, sandbox_id: str) -> FakeModalSandbox:
        """The fake's record of a sandbox (running or ended)."""
        return self.sandboxes[sandbox_id]

    def processes(self, sandbox_id: str) -> list[subprocess.Popen[bytes]]:
        """The processes the sandbox's execs started."""
        return [
            e.process for e in self.record(sandbox_id).execs.values() if isinstance(e, _ProcessExec)
        ]

    def kill(self, sandbox_id: str) -> None:
        """End a sandbox as if Modal had (its processes killed, its files removed)."""
        self._end(self.record(sandbox_id), _TERMINATED, "killed")

    def wait_gone(self, sandbox_ids: Iterable[str], bound: float) -> list[str]:
        """Wait up to ``bound`` seconds for the sandboxes to end; return those still live."""
        wanted = set(sandbox_ids)
        deadline = time.monotonic() + bound
        while True:
            left = sorted(wanted & set(self.live()))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    # -- sandboxes ----------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    def _end(self, record: FakeModalSandbox, status: int, why: str = "") -> None:
        with self._lock:
            if record.result is not None or record.ending:
                return
            record.ending = True
        record.box.kill()  # a sandbox counts as ended only once this is done
        with self._lock:
            record.result = api_pb2.GenericResult(status=status, exception=why)

    async def _reaper(self) -> None:
        """Enforce ``timeout`` and ``idle_timeout`` as the service does."""
        while True:
            await asyncio.sleep(self.reap_every)
            now = time.monotonic()
            for record in list(self.sandboxes.values()):
                if record.result is not None:
                    continue
                definition = record.definition
                if definition.timeout_secs and now - record.created_at > definition.timeout_secs:
                    await asyncio.to_thread(self._end, record, _TIMEOUT, "timeout")
                    continue
                idle = definition.idle_timeout_secs
                if idle and record.running_execs == 0 and now - record.last_active > idle:
                    await asyncio.to_thread(self._end, record, _TERMINATED, "idle timeout")

    def _sandbox(self, sandbox_id: str) -> FakeModalSandbox:
        record = self.sandboxes.get(sandbox_id)
        if record is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return record

    def _by_task(self, task_id: str) -> FakeModalSandbox:
        for record in self.sandboxes.values():
            if record.task_id == task_id:
                if record.result is not None:
                    raise GRPCError(Status.NOT_FOUND, f"task {task_id} has finished")
                return record
        raise GRPCError(Status.NOT_FOUND, f"task {task_id} not found")

    def _exec(self, task_id: str, exec_id: str) -> tuple[FakeModalSandbox, _Exec]:
        for record in self.sandboxes.values():
            if record.task_id == task_id:
                found = record.execs.get(exec_id)
                if found is not None:
                    return record, found
        raise GRPCError(Status.NOT_FOUND, f"exec {exec_id} not found")

    def create_sandbox(self, request: api_pb2.SandboxCreateV2Request) -> FakeModalSandbox:
        """``SandboxCreateV2``: a FakeSandbox with the definition's network and tags."""
        if self.fail_create is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, self.fail_create)
        definition = request.definition
        if request.app_id not in self.apps.values():
            raise GRPCError(Status.NOT_FOUND, f"App {request.app_id} not found")
        if definition.image_id not in self.images.values():
            raise GRPCError(Status.NOT_FOUND, f"Image {definition.image_id} not found")
        blocked = api_pb2.NetworkAccess.NetworkAccessType.BLOCKED
        tags = {t.tag_name: t.tag_value for t in request.tags}
        sandbox_id = self._new_id("sb")
        box = FakeSandbox(
            sandbox_id,
            network=definition.network_access.network_access_type != blocked,
            labels=tags,
        )
        now = time.monotonic()
        record = FakeModalSandbox(
            id=sandbox_id,
            task_id=self._new_id("ta") + "V",  # the SDK's marker of a V2 sandbox's task
            app_id=request.app_id,
            box=box,
            definition=definition,
            tags=tags,
            created_at=now,
            last_active=now,
        )
        with self._lock:
            self.sandboxes[sandbox_id] = record
        return record

    def start_exec(
        self, request: sr_pb2.TaskExecStartRequest, loop: asyncio.AbstractEventLoop
    ) -> None:
        """``TaskExecStart``: run the command in the sandbox (or play the fs tool)."""
        record = self._by_task(request.task_id)
        argv = list(request.command_args)
        record.last_active = time.monotonic()

        def touched() -> None:
            record.last_active = time.monotonic()

        execution: _Exec
        if argv and argv[0] == FS_TOOLS:
            if self.fail_uploads:
                raise GRPCError(Status.INTERNAL, "fake: the fs tool could not start")
            execution = _FsToolExec(loop, touched, record.box, argv[1], self.corrupt_uploads)
        else:
            if argv and argv[0] in self.missing_commands:
                argv = ["sh", "-c", 'echo "exec: $0: not found" >&2; exit 127', argv[0]]
            process = record.box.exec(argv, cwd=request.workdir or HOME)
            execution = _ProcessExec(loop, touched, process)
        record.execs[request.exec_id] = execution


def _unimplemented(fake: ModalFake, name: str) -> Callable[..., Any]:
    async def handler(self: Any, stream: Any) -> None:
        fake.unimplemented.append(name)
        raise GRPCError(Status.UNIMPLEMENTED, f"the Modal fake does not implement {name}")

    handler.__name__ = name
    return handler


def _complete(base: type, methods: dict[str, Any], fake: ModalFake) -> Any:
    """An instance of ``base`` with ``methods``; every other RPC fails loudly."""
    namespace: dict[str, Any] = {
        name: _unimplemented(fake, name) for name in getattr(base, "__abstractmethods__", ())
    }
    for name, method in methods.items():

        def logged(method: Any = method, name: str = name) -> Any:
            async def handler(self: Any, stream: Any) -> None:
                fake.calls.append(name)
                hook = fake.hooks.get(name)
                if hook is not None:
                    await asyncio.to_thread(hook)
                delay = fake.delays.get(name)
                if delay:
                    await asyncio.sleep(delay)
                await method(stream)

            return handler

        namespace[name] = logged()
    return type(f"Fake{base.__name__}", (base,), namespace)()


async def _unary(stream: Any, answer: Callable[[Any], Any]) -> None:
    request = await stream.recv_message()
    await stream.send_message(answer(request))


def _check_token(stream: Any) -> None:
    metadata = stream.metadata or {}
    if (metadata.get("x-modal-token-id"), metadata.get("x-modal-token-secret")) != (
        TOKEN_ID,
        TOKEN_SECRET,
    ):
        raise GRPCError(Status.UNAUTHENTICATED, "fake: unknown Modal token")


def _api_servicer(fake: ModalFake) -> Any:
    """The control plane: ``ModalClientBase`` with what the plugin's SDK calls need."""

    async def AppGetOrCreate(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.AppGetOrCreateRequest) -> Any:
            create = api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
            if request.app_name not in fake.apps and request.object_creation_type != create:
                raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found")
            app_id = fake.apps.setdefault(request.app_name, fake._new_id("ap"))
            return api_pb2.AppGetOrCreateResponse(app_id=app_id)

        await _unary(stream, answer)

    async def EnvironmentGetOrCreate(stream: Any) -> None:
        _check_token(stream)
        metadata = api_pb2.EnvironmentMetadata(
            name="main", settings=api_pb2.EnvironmentSettings(image_builder_version=BUILDER_VERSION)
        )
        await _unary(
            stream,
            lambda r: api_pb2.EnvironmentGetOrCreateResponse(
                environment_id="en-fake", metadata=metadata
            ),
        )

    async def ImageGetOrCreate(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.ImageGetOrCreateRequest) -> Any:
            key = (
                request.image.SerializeToString(deterministic=True)
                + request.builder_version.encode()
            )
            with fake._lock:
                image_id = fake.images.get(key)
                if image_id is None or request.force_build:
                    image_id = fake.images[key] = fake._new_id("im")
                    fake.image_builds += 1
            metadata = api_pb2.ImageMetadata(
                python_version_info="3.11.7", image_builder_version=request.builder_version
            )
            return api_pb2.ImageGetOrCreateResponse(
                image_id=image_id, result=api_pb2.GenericResult(status=_OK), metadata=metadata
            )

        await _unary(stream, answer)

    async def AuthTokenGet(stream: Any) -> None:
        _check_token(stream)
        await _unary(stream, lambda r: api_pb2.AuthTokenGetResponse(token=_jwt("fake-user")))

    async def SandboxCreateV2(stream: Any) -> None:
        _check_token(stream)
        request = await stream.recv_message()
        record = await asyncio.to_thread(fake.create_sandbox, request)
        access = api_pb2.CommandRouterAccess(
            url=fake.router_url or fake.url, jwt=_jwt(record.task_id)
        )
        await stream.send_message(
            api_pb2.SandboxCreateV2Response(
                sandbox_id=record.id,
                task_id=record.task_id,
                command_router_access=access,
                metadata=api_pb2.SandboxHandleMetadata(app_id=record.app_id),
            )
        )

    async def SandboxGetCommandRouterAccess(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.SandboxGetCommandRouterAccessRequest) -> Any:
            record = fake._sandbox(request.sandbox_id) if request.sandbox_id else None
            task_id = record.task_id if record else request.task_id
            return api_pb2.SandboxGetCommandRouterAccessResponse(
                url=fake.router_url or fake.url, jwt=_jwt(task_id)
            )

        await _unary(stream, answer)

    async def SandboxGetTaskIdV2(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.SandboxGetTaskIdRequest) -> Any:
            record = fake._sandbox(request.sandbox_id)
            return api_pb2.SandboxGetTaskIdResponse(
                task_id=record.task_id, task_result=record.result
            )

        await _unary(stream, answer)

    async def SandboxWaitV2(stream: Any) -> None:
        _check_token(stream)
        request = await stream.recv_message()
        record = fake._sandbox(request.sandbox_id)
        deadline = time.monotonic() + request.timeout
        while record.result is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await stream.send_message(api_pb2.SandboxWaitResponse(result=record.result))

    async def SandboxTerminateV2(stream: Any) -> None:
        _check_token(stream)
        request = await stream.recv_message()
        record = fake._sandbox(request.sandbox_id)
        await asyncio.to_thread(fake._end, record, _TERMINATED, "terminated")
        await stream.send_message(api_pb2.SandboxTerminateResponse(existing_result=record.result))

    async def SandboxListV2(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.SandboxListRequest) -> Any:
            wanted = {t.tag_name: t.tag_value for t in request.tags}
            found = [
                s
                for s in fake.sandboxes.values()
                if (request.include_finished or s.result is None)
                and (not request.app_id or s.app_id == request.app_id)
                and all(s.tags.get(k) == v for k, v in wanted.items())
                and (not request.before_timestamp or s.created_at < request.before_timestamp)
            ]
            found.sort(key=lambda s: s.created_at, reverse=True)
            return api_pb2.SandboxListResponse(
                sandboxes=[
                    api_pb2.SandboxInfo(
                        id=s.id,
                        app_id=s.app_id,
                        created_at=s.created_at,
                        tags=[
                            api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in s.tags.items()
                        ],
                        task_info=api_pb2.TaskInfo(id=s.task_id, result=s.result),
                        metadata=api_pb2.SandboxHandleMetadata(app_id=s.app_id),
                    )
                    for s in found
                ]
            )

        await _unary(stream, answer)

    async def SandboxTagsGetV2(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.SandboxTagsGetRequest) -> Any:
            tags = fake._sandbox(request.sandbox_id).tags
            return api_pb2.SandboxTagsGetResponse(
                tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in tags.items()]
            )

        await _unary(stream, answer)

    async def SandboxTagsSetV2(stream: Any) -> None:
        _check_token(stream)

        def answer(request: api_pb2.SandboxTagsSetRequest) -> Any:
            record = fake._sandbox(request.sandbox_id)
            record.tags = {t.tag_name: t.tag_value for t in request.tags}
            record.box.labels = dict(record.tags)
            from google.protobuf import empty_pb2

            return empty_pb2.Empty()

        await _unary(stream, answer)

    methods = {name: fn for name, fn in locals().items() if name[:1].isupper()}
    return _complete(api_grpc.ModalClientBase, methods, fake)


def _router_servicer(fake: ModalFake) -> Any:
    """The worker's task command router: exec, stdio and stdin."""

    async def TaskExecStart(stream: Any) -> None:
        request = await stream.recv_message()
        await asyncio.to_thread(fake.start_exec, request, asyncio.get_running_loop())
        await stream.send_message(sr_pb2.TaskExecStartResponse())

    async def TaskExecStdioRead(stream: Any) -> None:
        request = await stream.recv_message()
        _, execution = fake._exec(request.task_id, request.exec_id)
        fd = 0 if request.file_descriptor == sr_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT else 1
        offset = request.offset
        while True:
            # No await between the read and the wait: a wake-up cannot slip in between.
            data, closed = execution.read(fd, offset)
            if data:
                offset += len(data)
                await stream.send_message(sr_pb2.TaskExecStdioReadResponse(data=data))
            elif closed:
                return
            else:
                await execution.changed()

    async def TaskExecStdinWrite(stream: Any) -> None:
        request = await stream.recv_message()
        record, execution = fake._exec(request.task_id, request.exec_id)
        record.last_active = time.monotonic()
        fake.max_stdin_write = max(fake.max_stdin_write, len(request.data))
        await execution.write_stdin(request.offset, request.data, request.eof)
        await stream.send_message(sr_pb2.TaskExecStdinWriteResponse())

    async def TaskExecStdinWriteStream(stream: Any) -> None:
        execution: _Exec | None = None
        offset = 0
        async for message in stream:
            kind = message.WhichOneof("payload")
            if kind == "start":
                _, execution = fake._exec(message.start.task_id, message.start.exec_id)
                offset = message.start.offset
            elif execution is None:
                raise GRPCError(Status.FAILED_PRECONDITION, "stdin stream without a start")
            elif kind == "end":
                await execution.write_stdin(offset, b"", True)
            elif message.data:
                await execution.write_stdin(offset, message.data, False)
                offset += len(message.data)
        await stream.send_message(sr_pb2.TaskExecStdinWriteStreamResponse())

    async def TaskExecStdinStatus(stream: Any) -> None:
        request = await stream.recv_message()
        _, execution = fake._exec(request.task_id, request.exec_id)
        await stream.send_message(
            sr_pb2.TaskExecStdinStatusResponse(
                num_bytes_written=execution.stdin_offset, closed=execution.stdin_closed
            )
        )

    def exit_status(execution: _Exec, kind: Any) -> Any:
        code = execution.returncode
        if code is None:
            return kind()
        return kind(signal=-code) if code < 0 else kind(code=code)

    async def TaskExecPoll(stream: Any) -> None:
        request = await stream.recv_message()
        _, execution = fake._exec(request.task_id, request.exec_id)
        await stream.send_message(exit_status(execution, sr_pb2.TaskExecPollResponse))

    async def TaskExecWait(stream: Any) -> None:
        request = await stream.recv_message()
        _, execution = fake._exec(request.task_id, request.exec_id)
        while execution.returncode is None:
            await execution.changed()
        await stream.send_message(exit_status(execution, sr_pb2.TaskExecWaitResponse))

    methods = {name: fn for name, fn in locals().items() if name[:1].isupper()}
    return _complete(task_command_router_grpc.TaskCommandRouterBase, methods, fake)
