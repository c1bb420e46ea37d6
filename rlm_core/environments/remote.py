"""What every cloud sandbox launcher shares; a provider plugin writes only SDK calls.

A :class:`RemoteLauncher` starts one agent in one provider sandbox in three steps, each a
method the plugin implements with its SDK:

1. :meth:`~RemoteLauncher.create_sandbox`: image or template, resources, egress, lifetime,
   and :attr:`LaunchRequest.labels <rlm_core.environments.launcher.LaunchRequest.labels>`
   as the sandbox's tags or metadata;
2. :meth:`~RemoteLauncher.upload`: the agent bundle
   (:func:`~rlm_core.environments.shipping.agent_bundle`) written into the sandbox;
3. :meth:`~RemoteLauncher.exec_agent`: the agent's command line run in the sandbox, its
   stdin and stdout handed back as a :class:`SandboxExec` (the ``stdio`` carrier's byte
   stream; :class:`PushStream` and :func:`pump` make one from an SDK's callbacks or output
   iterator);

and ends it with :meth:`~RemoteLauncher.kill_sandbox`. The base class does the rest, the
same for every provider:

* the start runs on a worker thread while the caller waits up to the request's deadline.
  A start that times out or is interrupted (``KeyboardInterrupt``) still ends its sandbox:
  one the SDK returns after :meth:`~RemoteLauncher.terminate` is killed at once, and a
  ``terminate()`` while the create call is under way, or a create call that fails, also
  looks the sandbox up by its ``rlm-session`` label (:meth:`~Launcher.list_sandboxes`);
* an optional lease (``lease_interval``): the sandbox is created with a short server-side
  lifetime (:meth:`~RemoteLauncher.lease_seconds`) that
  :meth:`~RemoteLauncher.renew_sandbox` extends while this host lives, never past the
  request's ``max_lifetime``; a host killed with SIGKILL loses its sandbox within one lease;
* termination on ``close()``, on every failed start and at interpreter exit;
* :attr:`~RemoteLauncher.timings` of the three steps, exit status and stderr for errors;
* :meth:`~RemoteLauncher.cleanup` of leftovers by id or tag, from the plugin's
  :meth:`~Launcher.list_sandboxes` and :meth:`~RemoteLauncher.kill_sandbox_ids`.
"""

from __future__ import annotations

import logging
import math
import subprocess
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, ClassVar, Protocol, cast

from rlm_core.bridge.carriers import Connection, Framing, Stdio
from rlm_core.bridge.carriers.stdio import PushStream, pipe_stream
from rlm_core.environments.launcher import (
    Launcher,
    LaunchRequest,
    terminate_at_exit,
    terminated_before_exit,
)
from rlm_core.environments.launching import StderrTail, process_status
from rlm_core.environments.lease import Lease
from rlm_core.environments.shipping import agent_bundle
from rlm_core.exceptions import SandboxError

__all__ = [
    "ProcessExec",
    "PushExec",
    "PushStream",
    "RemoteLauncher",
    "SandboxExec",
    "pump",
    "status_from_exit_code",
]

log = logging.getLogger(__name__)


class SandboxExec(Protocol):
    """The agent's command running in a sandbox, as :meth:`RemoteLauncher.exec_agent`
    returns it: its stdio (a :class:`~rlm_core.bridge.carriers.stdio.ByteStream`), its
    exit status and the tail of its stderr."""

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin."""
        ...

    def __iter__(self) -> Iterator[bytes | str]:
        """The agent's stdout in chunks until it ends (raising ends it with that error)."""
        ...

    def close(self) -> None:
        """End the iteration now. Called after the sandbox was killed (or by the relay
        when it closes): it need not stop the command, the sandbox's end does."""
        ...

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The command's exit status once it has ended (``-N``: killed by signal N),
        waiting up to ``wait`` seconds; ``None`` while it runs or when unknown."""
        ...

    def stderr_tail(self) -> str:
        """The last lines the command wrote to its stderr."""
        ...


class PushExec:
    """The base of a :class:`SandboxExec` whose stdout the provider's SDK delivers by
    callback or iterator: it is pushed into :attr:`stdout` (a
    :class:`~rlm_core.bridge.carriers.stdio.PushStream`, e.g. with :func:`pump`), and the
    stderr goes into :attr:`stderr` (read from ``stderr`` when given, else fed by the SDK's
    callback with ``self.stderr.feed``). A subclass writes the agent's stdin
    (:meth:`write_stdin`) and says its exit status (:meth:`exit_status`)."""

    def __init__(
        self, stderr: Iterable[bytes | str] | None = None, stderr_wait: float = 0.0
    ) -> None:
        self.stdout = PushStream(self.write_stdin)
        """The agent's stdout, as the SDK pushes it."""
        self.stderr = StderrTail(stderr)
        """The last lines of the agent's stderr."""
        self._stderr_wait = stderr_wait

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin with the SDK's calls."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Write ``data`` to the agent's stdin (:meth:`write_stdin`)."""
        self.stdout.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """The agent's stdout, chunk by chunk, until it ends or :meth:`close`."""
        return iter(self.stdout)

    def close(self) -> None:
        """End the iteration now (the command ends with its sandbox)."""
        self.stdout.close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The command's exit status once it has ended (``None`` here: unknown)."""
        return None

    def stderr_tail(self) -> str:
        """The last lines of the agent's stderr (waiting up to ``stderr_wait`` seconds
        for a stderr stream to end)."""
        return self.stderr.text(wait=self._stderr_wait)


class ProcessExec:
    """A :class:`SandboxExec` over a local process with binary pipes that runs the agent
    in the sandbox: a provider's command-line client (``docker run -i``), or a test's
    stand-in for a provider."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("the process needs pipes for its stdin and stdout")
        self.process = process
        self._stream = pipe_stream(cast(BinaryIO, process.stdin), cast(BinaryIO, process.stdout))
        self._stderr = StderrTail(process.stderr, ended=lambda: process.poll() is not None)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the process's stdin."""
        self._stream.send(data)

    def __iter__(self) -> Iterator[bytes | str]:
        """The process's stdout in chunks until it ends."""
        return iter(self._stream)

    def close(self) -> None:
        """Close the pipes: the iteration ends."""
        self._stream.close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The process's return code (``-N``: killed by signal N) once it has ended."""
        return process_status(self.process, wait)

    def stderr_tail(self) -> str:
        """The last lines of the process's stderr."""
        return self._stderr.text()


def pump(chunks: Iterable[bytes | str], into: PushStream, what: str) -> threading.Thread:
    """Iterate an SDK's output iterator into ``into`` on a daemon thread, so that closing
    the stream ends the relay's reading at once even while the SDK still waits on the
    network. An error of the iterator ends the stream with ``what`` and the error."""

    def run() -> None:
        try:
            for chunk in chunks:
                into.push(chunk if isinstance(chunk, str) else bytes(chunk))
        except Exception as exc:
            into.end(f"reading {what} failed: {type(exc).__name__}: {exc}")
        else:
            into.end()

    thread = threading.Thread(target=run, name=f"rlm-pump-{what}", daemon=True)
    thread.start()
    return thread


def status_from_exit_code(code: int) -> int:
    """The core's exit status (``-N``: killed by signal N) from a shell-style exit code,
    which reports a process killed by signal N as ``128 + N``."""
    return -(code - 128) if 128 < code < 128 + 65 else code


class RemoteLauncher(Launcher):
    """One agent in one provider sandbox over the ``stdio`` carrier; see the module
    docstring. A subclass sets :attr:`provider` (and :attr:`framing` when the SDK decodes
    stdout as text) and implements the SDK calls; the start, the lease, termination and
    cleanup are done here."""

    provider: ClassVar[str] = "remote"
    """The provider's name in messages (``"Modal"``)."""

    framing: Framing = "binary"
    """The stdio carrier's framing: ``"binary"`` when the SDK passes stdout's bytes as they
    are, ``"base64"`` when it decodes them as text."""

    agent_dir: ClassVar[str] = "/tmp"
    """Where the agent bundle is uploaded in the sandbox."""

    def __init__(self, *, lease_interval: float | None = None) -> None:
        if lease_interval is not None and not lease_interval > 0:
            raise ValueError(f"lease_interval must be positive, not {lease_interval!r}")
        self.lease_interval = lease_interval
        """Seconds between renewals of the sandbox's lifetime (``None``: no lease; the
        sandbox's own server-side timeouts bound it)."""
        self.timings: dict[str, float] = {}
        """Seconds each step of the start took: ``create``, ``ship`` and ``exec``."""
        self._lock = threading.Lock()
        self._closed = False
        self._step = "not started"
        self._creating = False
        self._session: str | None = None
        self._sandbox: Any = None
        self._sandbox_id: str | None = None
        self._exec: SandboxExec | None = None
        self._lease: Lease | None = None
        self._max_lifetime: float | None = None
        self._created_at = 0.0

    # -- per provider: SDK calls ------------------------------------------------------------

    def prepare(self) -> None:
        """Called first in :meth:`launch`, on the caller's thread: import the SDK here, so
        that the exit handler registered right after it runs before the SDK's own."""

    @abstractmethod
    def create_sandbox(self, request: LaunchRequest) -> Any:
        """Create the sandbox (with ``request.labels`` as its tags or metadata and, with a
        lease, :meth:`lease_seconds` as its lifetime); return the SDK's handle of it."""

    @abstractmethod
    def identify(self, sandbox: Any) -> str:
        """The provider's id of ``sandbox`` (what :meth:`list_sandboxes` lists)."""

    @abstractmethod
    def upload(self, sandbox: Any, path: str, data: bytes, request: LaunchRequest) -> None:
        """Write ``data`` (the agent bundle) to ``path`` in the sandbox."""

    @abstractmethod
    def exec_agent(self, sandbox: Any, argv: list[str], request: LaunchRequest) -> SandboxExec:
        """Run ``argv`` in the sandbox with its stdin, stdout and stderr connected."""

    @abstractmethod
    def kill_sandbox(self, sandbox: Any) -> None:
        """End ``sandbox`` and everything in it."""

    def renew_sandbox(self, sandbox: Any, seconds: int) -> None:
        """Extend ``sandbox``'s server-side lifetime to ``seconds`` from now (needed only
        with a lease)."""
        raise NotImplementedError(f"{type(self).__name__} has no lease to renew")

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """End the sandboxes with these ids; return those that were still there. The
        default ends none (a provider without it)."""
        return []

    # -- the start --------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Connection:
        """Create the sandbox, upload the agent, exec it; its stdio is the carrier."""
        self.prepare()
        terminate_at_exit(self)
        with self._lock:
            self._session = request.session_id
            self._max_lifetime = request.max_lifetime
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def start() -> None:
            try:
                outcome["connection"] = self._start(request)
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                done.set()

        name = f"rlm-{self.provider.lower()}-start"
        threading.Thread(target=start, name=name, daemon=True).start()
        while not done.wait(0.1):
            if request.remaining() <= 0:
                raise TimeoutError(
                    f"the {self.provider} sandbox did not start in time ({self._step})"
                )
        if "error" in outcome:
            raise outcome["error"]
        connection: Connection = outcome["connection"]
        return connection

    def _start(self, request: LaunchRequest) -> Connection:
        self._to_step(request, f"creating the {self.provider} sandbox", creating=True)
        began = time.monotonic()
        self._created_at = began
        try:
            sandbox = self.create_sandbox(request)
        except BaseException:
            with self._lock:
                self._creating, closed = False, self._closed
            if not closed:  # (terminate() looked it up already)
                # A create call that failed late (a timeout once the service had accepted
                # it) may have made the sandbox all the same: find it by its session label.
                self._kill_session(request.session_id)
            raise
        with self._lock:
            self._creating = False
        self._adopt(sandbox)
        self.timings["create"] = time.monotonic() - began
        if self.lease_interval is not None:
            lease = Lease(self._renew, self.lease_interval, name=f"sandbox {self._sandbox_id}")
            with self._lock:
                self._lease = lease.start()
        bundle = agent_bundle()
        path = f"{self.agent_dir}/{bundle.filename}"
        self._to_step(request, f"uploading the agent ({len(bundle.data)} bytes)")
        began = time.monotonic()
        self.upload(sandbox, path, bundle.data, request)
        self.timings["ship"] = time.monotonic() - began
        self._to_step(request, "starting the agent")
        began = time.monotonic()
        argv = request.agent_argv("stdio", bundle=path, framing=self.framing)
        command = self.exec_agent(sandbox, argv, request)
        with self._lock:
            self._exec = command
            closed = self._closed
        if closed:
            command.close()
            raise SandboxError(f"the {self.provider} sandbox was terminated while it started")
        self.timings["exec"] = time.monotonic() - began
        return Stdio(command, self.framing)

    def _to_step(self, request: LaunchRequest, step: str, creating: bool = False) -> None:
        with self._lock:
            if self._closed:
                raise SandboxError(f"the {self.provider} sandbox was terminated while {self._step}")
            self._step = step
            self._creating = creating
        request.progress(step)

    def _adopt(self, sandbox: Any) -> None:
        """Keep the new sandbox, or kill it at once if the start was abandoned."""
        identity = self.identify(sandbox)
        with self._lock:
            closed = self._closed
            if not closed:
                self._sandbox, self._sandbox_id = sandbox, identity
        if closed:
            self._kill_quietly(sandbox)
            raise SandboxError(f"the {self.provider} sandbox was terminated while it started")

    # -- the lease --------------------------------------------------------------------------

    def lease_seconds(self) -> int:
        """The server-side lifetime to set now: twice the lease interval (one missed
        renewal is survived), never past the request's ``max_lifetime``."""
        seconds = 2 * (self.lease_interval or 0.0)
        if self._max_lifetime is not None:
            seconds = min(seconds, self._max_lifetime - (time.monotonic() - self._created_at))
        return max(1, math.ceil(seconds))

    def _renew(self) -> None:
        sandbox = self._sandbox
        if sandbox is None:
            return
        lived = time.monotonic() - self._created_at
        if self._max_lifetime is not None and lived >= self._max_lifetime:
            return  # the last lifetime granted ends it at max_lifetime
        self.renew_sandbox(sandbox, self.lease_seconds())

    # -- the rest of the contract -----------------------------------------------------------

    @property
    def sandbox_id(self) -> str | None:
        """The provider's id of the sandbox, once created."""
        return self._sandbox_id

    def terminate(self) -> None:
        """Stop renewing, kill the sandbox (looked up by its session label if the create
        call was under way) and end the relay's stream. Safe to call twice and before
        :meth:`launch`."""
        with self._lock:
            self._closed = True
            sandbox, self._sandbox = self._sandbox, None
            lease, self._lease = self._lease, None
            command = self._exec
            in_create, self._creating = self._creating, False
            session, self._session = self._session, None
        if lease is not None:
            lease.stop()
        try:
            if sandbox is not None:
                self._kill_quietly(sandbox)
            elif in_create and session is not None:
                self._kill_session(session)
        finally:
            terminated_before_exit(self)
            if command is not None:
                command.close()

    def _kill_quietly(self, sandbox: Any) -> None:
        try:
            self.kill_sandbox(sandbox)
        except Exception as exc:  # its server-side lifetime still ends it
            log.warning("could not kill %s sandbox %s: %s", self.provider, self._sandbox_id, exc)

    def _kill_session(self, session: str) -> None:
        """The create call was cut short: the sandbox may exist all the same."""
        try:
            self.kill_sandbox_ids(type(self).list_sandboxes(tag=session) or [])
        except Exception as exc:
            log.warning("could not look up the %s sandbox being created: %s", self.provider, exc)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status once it has ended (``-N``: killed by signal N)."""
        command = self._exec
        if command is None:
            return None
        try:
            return command.exit_status(wait)
        except Exception:  # the sandbox is gone: nothing more to learn
            return None

    def diagnostics(self) -> str:
        """The last lines the agent wrote to its stderr."""
        return "" if self._exec is None else self._exec.stderr_tail()

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """End sandboxes by id, or those listed for ``tag`` (with neither: every rlm-core
        sandbox); return the ids ended."""
        wanted = list(ids)
        if tag is not None or not wanted:
            wanted += cls.list_sandboxes(tag=tag) or []
        return cls.kill_sandbox_ids(list(dict.fromkeys(wanted)))
