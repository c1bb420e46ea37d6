"""Remote environments: an agent plus a launcher.

:class:`AgentEnvironment` does everything a sandbox provider needs except starting the
sandbox: it launches the agent through the provider's :class:`Launcher`, opens the carrier
the launcher chose, serves the sub-LM and tool calls the agent sends, loads contexts as
streams, enforces cell timeouts, notices a dead agent at once and restarts one whose cell
ignored its interrupt (replaying contexts and history). It keeps only that lifecycle: every
RPC is :class:`~rlm_core.bridge.client.AgentClient`'s, and gRPC is loaded only when an agent
starts. A provider plugin subclasses it and implements :meth:`AgentEnvironment.make_launcher`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import time
import weakref
from abc import abstractmethod
from secrets import token_hex
from typing import TYPE_CHECKING, Any, ClassVar

from rlm_core import __version__
from rlm_core.agent import codec
from rlm_core.bridge.results import AgentGoneError, AgentInfo, CellDeadlineError
from rlm_core.bridge.tls import make_tls_material, new_token
from rlm_core.environments.base import (
    COMPACTION,
    FILES,
    PERSISTENT,
    RECURSIVE,
    RESERVED_NAMES,
    SEPARATE_PROCESS,
    SUBCALLS,
    TIMEOUT,
    Environment,
    Session,
)
from rlm_core.environments.launcher import (
    AgentSecrets,
    Launcher,
    LaunchRequest,
    call_launch,
    describe_status,
)
from rlm_core.exceptions import (
    ConfigurationError,
    ContextError,
    ProtocolMismatchError,
    SandboxCrashedError,
    SandboxError,
    SandboxRestartedError,
)
from rlm_core.types import REPLResult

if TYPE_CHECKING:
    from rlm_core.bridge.carriers.opening import OpenCarrier
    from rlm_core.bridge.client import AgentClient
    from rlm_core.bridge.subcalls import SubcallServer

__all__ = ["AgentEnvironment", "AgentInfo", "AgentSecrets", "LaunchRequest", "Launcher"]

log = logging.getLogger(__name__)

_REPLAYED = re.compile(r"^history(_\d+)?$")

SHARED_FILE_MIN_BYTES = 4 * 1024 * 1024
"""Contexts at least this large go through the launcher's shared directory when it has one."""


_open_environments: weakref.WeakSet[AgentEnvironment] = weakref.WeakSet()
"""Started environments not closed yet: closed at host exit, so a host that never calls
``close()`` still stops its sandboxes and removes its carriers' sockets."""


def _close_open_environments() -> None:
    for env in list(_open_environments):
        with contextlib.suppress(Exception):
            env.close()


atexit.register(_close_open_environments)
os.register_at_fork(after_in_child=_open_environments.clear)  # the parent's, not the child's


def check_agent_version(agent_version: str) -> None:
    """Raise :class:`ProtocolMismatchError` unless the agent is the host's own version (a
    sandbox must run the agent shipped from the host: see :mod:`.shipping`)."""
    if agent_version != __version__:
        raise ProtocolMismatchError(
            f"the agent in the sandbox is rlm-core {agent_version}, the host is rlm-core "
            f"{__version__}: ship the host's agent into the sandbox "
            "(rlm_core.environments.shipping.agent_bundle()) instead of installing one there"
        )


class AgentEnvironment(Environment):
    """Everything a remote environment needs except launching the sandbox.

    ``environment_kwargs``:

    * ``cell_timeout``: seconds a cell may run before it is interrupted (state is kept);
      a cell that ignores the interrupt for ``interrupt_grace`` more seconds gets the agent
      killed and started again (:class:`SandboxRestartedError`, state lost).
    * ``tls``: encrypt the connection with a per-session certificate the host pins.
    * ``heartbeat_interval`` / ``heartbeat_timeout``: the agent exits once the host has
      been silent for ``heartbeat_timeout`` seconds.
    * ``startup_timeout``: seconds the whole start may take (the launcher's part included).
    * ``max_lifetime``: the longest a sandbox may live, in seconds, passed to the
      provider's own server-side timeout (``None``: the provider's default).
    """

    capabilities: frozenset[str] = frozenset(
        {TIMEOUT, PERSISTENT, SUBCALLS, RECURSIVE, COMPACTION, FILES, SEPARATE_PROCESS}
    )

    def __init__(
        self,
        cell_timeout: float | None = None,
        tls: bool = False,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 30.0,
        startup_timeout: float = 60.0,
        interrupt_grace: float = 3.0,
        max_dispatch_threads: int = 256,
        max_lifetime: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range("cell_timeout", cell_timeout, above=0, hint="None means no timeout")
        self.check_range("heartbeat_interval", heartbeat_interval, above=0)
        self.check_range("heartbeat_timeout", heartbeat_timeout, above=0)
        self.check_range("startup_timeout", startup_timeout, above=0)
        self.check_range("interrupt_grace", interrupt_grace, at_least=0)
        self.check_range("max_dispatch_threads", max_dispatch_threads, at_least=1)
        self.check_range(
            "max_lifetime", max_lifetime, above=0, hint="None means the provider's default"
        )
        if heartbeat_interval >= heartbeat_timeout:
            raise ConfigurationError(
                f"the {self.name or type(self).__name__!r} environment's heartbeat_interval "
                f"({heartbeat_interval:g}) must be less than its heartbeat_timeout "
                f"({heartbeat_timeout:g}), or the agent takes the host for gone between "
                "two heartbeats"
            )
        self.cell_timeout = cell_timeout
        self.tls = tls
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.startup_timeout = startup_timeout
        self.interrupt_grace = interrupt_grace
        self.max_lifetime = max_lifetime
        self._max_dispatch_threads = max_dispatch_threads
        self._session: Session | None = None
        self._launcher: Launcher | None = None
        self._client: AgentClient | None = None
        self._carrier: OpenCarrier | None = None
        self._server: SubcallServer | None = None
        self._contexts: dict[int, Any] = {}
        self._replay: dict[str, Any] = {}
        self.agent_info: AgentInfo | None = None
        """What the agent said about itself in the handshake (``None`` until started)."""

    launcher_class: ClassVar[type[Launcher] | None] = None
    """The class of :meth:`make_launcher`'s launchers, for what is done per provider
    rather than per sandbox: listing and cleaning up leftovers (``rlm cleanup NAME``)."""

    @abstractmethod
    def make_launcher(self) -> Launcher:
        """A launcher for one agent of this environment."""

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, session: Session) -> None:
        """Launch the agent (first call) and serve ``session``'s sub-calls."""
        self._session = session
        if self._client is None:
            self._boot()
        elif self._server is not None:
            self._server.bind(session.subcalls)

    def rebind(self, session: Session) -> None:
        """Serve a new session's sub-calls; the agent and its state stay."""
        self._session = session
        if self._server is not None:
            self._server.bind(session.subcalls)

    def launch_request(self, secrets: AgentSecrets) -> LaunchRequest:
        """The request handed to the launcher (a subclass may add to it)."""
        return LaunchRequest(
            environment=self.name or type(self).__name__,
            secrets=secrets,
            heartbeat_timeout=self.heartbeat_timeout,
            deadline=time.monotonic() + self.startup_timeout,
            max_lifetime=self.max_lifetime,
            progress=self._report_progress,
        )

    def _report_progress(self, message: str) -> None:
        log.info("%s: %s", self.name or type(self).__name__, message)

    def _boot(self) -> None:
        from rlm_core.bridge.carriers.opening import open_carrier
        from rlm_core.bridge.client import AgentClient, check_fork_safety
        from rlm_core.bridge.subcalls import SubcallServer

        check_fork_safety()  # before anything is started
        session = self._require_session()
        launcher = self.make_launcher()
        secrets = AgentSecrets(new_token(), make_tls_material() if self.tls else None)
        request = self.launch_request(secrets)
        carrier: OpenCarrier | None = None
        client: AgentClient | None = None
        server = SubcallServer(self._max_dispatch_threads)
        try:
            connection = call_launch(launcher, request)
            secrets = request.secrets  # a launcher may hand over an agent started earlier
            carrier = open_carrier(connection, secrets.to_json(), request.deadline)
            client = AgentClient(
                carrier.route,
                secrets.token,
                session_certificate=secrets.tls.certificate if secrets.tls else None,
            )
            server.bind(session.subcalls)
            tools = server.tool_messages(session.custom_tools)
            server.start(client.respond)
            self.agent_info = client.begin(
                session.depth,
                tools,
                self.heartbeat_timeout,
                self.heartbeat_interval,
                server.dispatch,
                timeout=max(request.remaining(), 1.0),
            )
            check_agent_version(self.agent_info.agent_version)
        except BaseException as exc:
            server.close()
            if client is not None:
                client.close(timeout=0.5)
            status = launcher.exit_status(wait=0.5)
            launcher.terminate()
            relay_failure = carrier.failure() if carrier is not None else None
            preamble = carrier.diagnostics() if carrier is not None else ""
            if carrier is not None:
                carrier.close()
            if isinstance(exc, ProtocolMismatchError | KeyboardInterrupt):
                raise
            raise SandboxError(
                self._launch_failure(exc, status, relay_failure, preamble, launcher)
            ) from exc
        self._launcher, self._client, self._carrier, self._server = (
            launcher,
            client,
            carrier,
            server,
        )
        _open_environments.add(self)

    def _launch_failure(
        self,
        exc: BaseException,
        status: int | None,
        relay_failure: str | None,
        preamble: str,
        launcher: Launcher,
    ) -> str:
        """One plain message: the launcher's own words, the exit status, the stderr tail."""
        reason = str(exc) if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
        message = f"could not start the {self.name or type(self).__name__} agent: {reason}"
        if status is not None:
            message += f" ({describe_status(status)})"
        if relay_failure and relay_failure not in message:
            message += f"\ncarrier: {relay_failure}"
        for label, text in (("agent output", preamble), ("agent stderr", launcher.diagnostics())):
            if text and text not in message:
                message += f"\n{label}:\n{text}"
        return message

    @property
    def active_launcher(self) -> Launcher | None:
        """The launcher of the running sandbox (``None`` before start and after close)."""
        return self._launcher

    @property
    def carrier_name(self) -> str | None:
        """The carrier of the running session (``dial``, ``stdio`` or ``reverse``)."""
        return None if self._carrier is None else self._carrier.name

    def close(self) -> None:
        """End the session and stop the sandbox."""
        self._stop_agent(client_timeout=2.0)

    def _stop_agent(self, client_timeout: float) -> None:
        """Stop the sandbox, then drop the connection, the carrier and the sub-call server."""
        _open_environments.discard(self)
        client, self._client = self._client, None
        launcher, self._launcher = self._launcher, None
        carrier, self._carrier = self._carrier, None
        server, self._server = self._server, None
        if launcher is not None:
            # Stopping the sandbox ends the session; no need to ask the agent first.
            launcher.terminate()
        if client is not None:
            client.close(timeout=client_timeout, send_close=launcher is None)
        if carrier is not None:
            carrier.close()
        if server is not None:
            server.close()

    def _restart(self) -> None:
        """Replace a wedged agent with a fresh one and reload the contexts."""
        self._stop_agent(client_timeout=0.2)
        self._boot()
        for index, payload in sorted(self._contexts.items()):
            self.load_context(payload, index)
        for name, value in self._replay.items():
            self.set_variable(name, value)

    # -- the contract -------------------------------------------------------------------

    def _require_session(self) -> Session:
        if self._session is None:
            raise SandboxError(f"the {self.name} environment is not started")
        return self._session

    def _require_client(self) -> AgentClient:
        if self._client is None:
            raise SandboxError(f"the {self.name} environment is not started (or closed)")
        return self._client

    def _gone(self, exc: AgentGoneError) -> SandboxError:
        """Say why the connection broke: the agent died (with its status and stderr), the
        carrier failed, or only the call was cut short."""
        launcher = self._launcher
        status = launcher.exit_status(wait=2.0) if launcher is not None else None
        relay_failure = self._carrier.failure() if self._carrier is not None else None
        if status is None and not exc.unreachable and relay_failure is None:
            return SandboxError(f"{exc.doing} failed: {exc.detail}")
        detail = launcher.diagnostics() if launcher is not None else ""
        return SandboxCrashedError(
            f"the {self.name} agent died while {exc.doing} ({describe_status(status)})"
            + (f"\ncarrier: {relay_failure}" if relay_failure else "")
            + (f"\nagent stderr:\n{detail}" if detail else ""),
            status,
        )

    def load_context(self, payload: Any, index: int) -> None:
        """Stream ``payload`` to the agent in chunks (never as source text); on a host
        shared with the sandbox, large payloads go through the shared directory."""
        client = self._require_client()
        try:
            encoded = codec.encode_context_lazily(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ContextError(f"context {index}: {exc}") from exc
        shared = self._launcher.shared_dir() if self._launcher is not None else None
        try:
            if shared is not None and encoded.total_bytes >= SHARED_FILE_MIN_BYTES:
                self._load_context_file(client, shared, index, encoded)
            else:
                client.load_context(encoded, index)
        except AgentGoneError as exc:
            raise self._gone(exc) from None
        self._contexts[index] = payload

    @staticmethod
    def _load_context_file(
        client: AgentClient, shared: str, index: int, encoded: codec.EncodedContext
    ) -> None:
        """Same-host shortcut: write the payload into the shared directory, announce it."""
        name = f"context-{index}-{token_hex(8)}.bin"
        path = os.path.join(shared, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in encoded.pieces():
                    f.write(piece)
            client.load_context_file(name, encoded, index)
        finally:
            with contextlib.suppress(OSError):  # the agent deletes it once read
                os.unlink(path)

    def execute(self, code: str, timeout: float | None = None) -> REPLResult:
        """Run a cell in the agent; interrupt it after the timeout (state kept); if it
        ignores the interrupt, restart the agent and raise :class:`SandboxRestartedError`."""
        client = self._require_client()
        limits = [t for t in (timeout, self.cell_timeout) if t is not None and t > 0]
        cell_timeout = min(limits) if limits else 0.0
        deadline = cell_timeout + self.interrupt_grace if cell_timeout else None
        server = self._server
        if server is not None:
            server.take_calls()  # nothing left over from an earlier cell
        try:
            result = client.execute(code, cell_timeout, deadline)
        except CellDeadlineError:
            self._restart()
            raise SandboxRestartedError(
                f"the cell ran past its {cell_timeout:g}s timeout and ignored the "
                f"interrupt for {self.interrupt_grace:g}s more, so the {self.name} "
                "sandbox was restarted: all variables were lost (the contexts were "
                "loaded again)"
            ) from None
        except AgentGoneError as exc:
            raise self._gone(exc) from None
        if server is not None:
            result.rlm_calls = server.take_calls()
        return result

    def get_variable(self, name: str) -> Any:
        """A JSON copy of the variable, or its ``repr`` string when it is not JSON-able."""
        try:
            return self._require_client().get_variable(name)
        except AgentGoneError as exc:
            raise self._gone(exc) from None

    def _set(self, name: str, value: Any, extend: bool) -> None:
        try:
            self._require_client().set_variable(name, value, extend=extend)
        except AgentGoneError as exc:
            raise self._gone(exc) from None

    def set_variable(self, name: str, value: Any) -> None:
        """Send a JSON-compatible value into the namespace."""
        self._set(name, value, extend=False)
        if name in RESERVED_NAMES or _REPLAYED.match(name):
            self._replay[name] = value

    def extend_variable(self, name: str, items: list[Any]) -> None:
        """Append items to a list variable, sending only the new items."""
        self._set(name, items, extend=True)
        kept = self._replay.get(name)
        if isinstance(kept, list):
            kept.extend(items)
