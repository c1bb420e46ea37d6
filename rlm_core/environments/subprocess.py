"""``subprocess``: the agent in a child Python process, reached over a Unix socket.

Cells run in a separate interpreter, so a cell can be interrupted after a timeout, a crash
(``os._exit``, a segfault) is reported instead of taking the host down, and an optional
memory limit applies to the child only. The child dies with its host: it is started with
a parent-death signal (Linux), and the agent also exits when the host's heartbeats stop.
It is process isolation, not a security sandbox: the child runs as the same user.

The launcher takes a command prefix (``unshare ...``, ``bwrap ...``, ``docker exec ...``):
a wrapper environment is a subclass that sets :attr:`SubprocessEnvironment.command_prefix`.
Agents under a prefix are started afresh, not forked from the fork server (which would put
every agent in the fork server's own namespace), unless the environment says the prefix
may be shared (:attr:`SubprocessEnvironment.share_fork_server`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from rlm_core.bridge.carriers import Dial
from rlm_core.bridge.tls import make_tls_material, new_token
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import MEMORY_LIMIT
from rlm_core.environments.forkserver import (
    ForkedProcess,
    ForkServer,
    ForkServerError,
    die_with_starting_thread,
    startup_environment,
)
from rlm_core.environments.launcher import AgentSecrets, Launcher, LaunchRequest
from rlm_core.environments.launching import (
    StderrTail,
    process_status,
    start_agent,
    stop_agent_process,
    with_package_on_path,
)
from rlm_core.exceptions import SandboxError

log = logging.getLogger(__name__)

CommandHook = Callable[[list[str]], list[str]]
"""Turns the agent's command line into the one to run (e.g. wraps it in a container)."""

# Children are started from one long-lived thread: Linux sends the parent-death signal when
# the *thread* that started the child exits, so starting agents from short-lived worker
# threads would kill them early. The agent arms the signal itself (--die-with-parent).
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlm-agent-spawner")


def start_process(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_kwargs)`` in a new session, started from the
    host's long-lived spawner thread, so a parent-death signal the child arms
    (``--die-with-parent``) fires when the host ends, not when the calling thread does."""
    start: Callable[..., subprocess.Popen[Any]] = subprocess.Popen
    return _spawner.submit(start, argv, start_new_session=True, **popen_kwargs).result()


def _private_dir() -> str:
    """A new directory only this user can enter (the agent's socket and hand-over files)."""
    path = tempfile.mkdtemp(prefix="rlm-agent-")
    os.chmod(path, 0o700)
    return path


class _ForkServers:
    """The fork servers of this host, one per interpreter and start-up environment. Beyond
    :attr:`LIMIT`, the least recently used ones with no agent running are stopped."""

    LIMIT = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: collections.OrderedDict[
            tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]], ForkServer
        ]
        self._servers = collections.OrderedDict()
        self._cwd = tempfile.gettempdir()

    def get(self, python: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> ForkServer:
        """The live fork server for ``python``, the start-up variables of ``env`` and the
        command ``prefix``, started (with ``env``) if need be."""
        key = (python, tuple(sorted(startup_environment(env).items())), prefix)
        retired: list[ForkServer] = []
        with self._lock:
            server = self._servers.get(key)
            if server is None or not server.alive:
                if server is not None:
                    retired.append(server)
                # Started from the long-lived spawner thread (see _spawner).
                server = _spawner.submit(ForkServer, python, env, self._cwd, prefix).result()
                self._servers[key] = server
            self._servers.move_to_end(key)
            idle = [k for k, v in self._servers.items() if k != key and not v.busy]
            for old_key in idle[: max(0, len(self._servers) - self.LIMIT)]:
                retired.append(self._servers.pop(old_key))
        for old in retired:
            old.stop()
        return server

    def forget(self) -> None:
        """Drop every fork server without stopping it (they belong to the parent of a forked
        host)."""
        self._lock = threading.Lock()
        self._servers = collections.OrderedDict()

    def discard(self, server: ForkServer) -> None:
        """Stop a fork server that failed (its running agents, if any, end with it)."""
        with self._lock:
            for key, value in list(self._servers.items()):
                if value is server:
                    del self._servers[key]
        server.stop()

    def stop_all(self) -> None:
        """Stop every fork server (at host exit)."""
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.stop()


_fork_servers = _ForkServers()
atexit.register(_fork_servers.stop_all)


@dataclass(frozen=True)
class AgentConfig:
    """Everything that decides how an agent process is started (the key of a spare)."""

    python: str
    memory_limit_mb: int | None
    env: tuple[tuple[str, str], ...]
    heartbeat_timeout: float
    tls: bool
    prefix: tuple[str, ...] = ()
    """A command prefix the agent runs under (``unshare ...``)."""
    share_fork_server: bool = False
    """Whether agents under :attr:`prefix` may be forked from one fork server that runs
    under it (they then share its namespaces)."""


class AgentProcess:
    """One ``python -m rlm_core.agent`` child on a private Unix socket.

    With ``fork`` it is forked from the fork server for its configuration (started on first
    use), else (or when that fails) started as a new interpreter.
    """

    def __init__(
        self,
        config: AgentConfig,
        secrets: AgentSecrets,
        ready_timeout: float,
        fork: bool = False,
        command: CommandHook | None = None,
    ) -> None:
        self.config = config
        self.owner = os.getpid()  # a forked copy of the host must leave it alone
        self.started = time.monotonic()
        self.stderr_tail: StderrTail | None = None
        self._command = command
        with _live_agents.starting():  # an exit meanwhile waits for it, then stops it
            self.dir = _private_dir()
            try:
                self.process: subprocess.Popen[str] | ForkedProcess = self._spawn(
                    fork, ready_timeout
                )
            except BaseException:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
            _live_agents.add(self)
        # After _spawn, which may move the directory.
        self.route = Dial(f"unix:{self._socket_path()}")
        self.secrets = secrets
        self._ready_timeout = ready_timeout

    def _socket_path(self) -> str:
        return os.path.join(self.dir, "agent.sock")

    def _arguments(self) -> list[str]:
        """The agent's arguments, for its private directory (without ``--die-with-parent``:
        its parent adds that)."""
        arguments = [
            "--listen",
            f"unix:{self._socket_path()}",
            "--secrets-stdin",
            "--heartbeat-timeout",
            str(self.config.heartbeat_timeout),
            "--shared-dir",
            self.dir,
        ]
        if self.config.memory_limit_mb:
            arguments += ["--memory-limit-mb", str(self.config.memory_limit_mb)]
        return arguments

    def _spawn(self, fork: bool, timeout: float) -> subprocess.Popen[str] | ForkedProcess:
        env = self._environment()
        prefix = self.config.prefix
        wrapped = bool(prefix) or self._command is not None
        if fork and (not wrapped or self.config.share_fork_server):
            server: ForkServer | None = None
            try:
                server = _fork_servers.get(self.config.python, env, prefix)
                return server.spawn(self._arguments(), self.dir, env, timeout)
            except (ForkServerError, OSError) as exc:
                log.debug("forking an agent failed, starting one instead: %s", exc)
                if server is not None and not server.alive:  # one that answered is kept:
                    _fork_servers.discard(server)  # stopping it would end its agents
                    # An agent it forked before failing removes this directory as it dies.
                    old, self.dir = self.dir, _private_dir()
                    shutil.rmtree(old, ignore_errors=True)
        # Under a wrapper the agent's parent is the wrapper: it watches whoever started it
        # (0), and the wrapper dies with the spawner thread.
        watched = "0" if wrapped else str(os.getpid())
        command = [self.config.python, "-m", "rlm_core.agent", *self._arguments()]
        command = [*prefix, *command, "--die-with-parent", watched]
        if self._command is not None:
            command = self._command(command)
        if wrapped:
            command = [*die_with_starting_thread(), *command]
        return _spawner.submit(
            subprocess.Popen,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",  # a cell may write any bytes to fd 1 and 2
            env=env,
            cwd=self.dir,
            start_new_session=True,
        ).result()

    def _environment(self) -> dict[str, str]:
        env = with_package_on_path({k: v for k, v in os.environ.items() if k != "RLM_AGENT_TOKEN"})
        env.update(dict(self.config.env))
        return env

    def wait_ready(self) -> None:
        """Hand the agent its secrets and wait for its ready line (``SandboxError`` if it
        exits or stays silent past the ready timeout)."""
        process = self.process
        self.stderr_tail = StderrTail(process.stderr, ended=lambda: process.poll() is not None)
        start_agent(self.process, self.secrets.to_json(), time.monotonic() + self._ready_timeout)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def diagnostics(self) -> str:
        """The agent's last stderr lines."""
        return "" if self.stderr_tail is None else self.stderr_tail.text()

    def terminate(self) -> None:
        """Kill the agent, its supervisor and everything its cells started (however they
        detached themselves), and remove its private directory."""
        if os.getpid() != self.owner:
            return
        _live_agents.discard(self)
        stop_agent_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class _LiveAgents:
    """Every agent this host started and has not terminated yet, spares and agents still
    starting included: stopped when the host exits, so a host that never calls ``close()``
    leaves nothing behind. The exit waits (up to :attr:`EXIT_WAIT` seconds) for agents
    being started on other threads (a spare, in the background) to exist, so that it stops
    them too; once it ran, no agent starts any more."""

    EXIT_WAIT = 10.0

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._agents: set[AgentProcess] = set()
        self._starting = 0
        self._stopped = False

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Around the start of an agent (until :meth:`add`): the exit waits for it.
        :class:`~rlm_core.exceptions.SandboxError` once the host is exiting."""
        with self._changed:
            if self._stopped:
                raise SandboxError("the host is exiting: no agent starts any more")
            self._starting += 1
        try:
            yield
        finally:
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()

    def add(self, agent: AgentProcess) -> None:
        """Track ``agent`` (stopped at once if the exit did not wait for it)."""
        with self._changed:
            late = self._stopped
            if not late:
                self._agents.add(agent)
        if late:
            agent.terminate()

    def discard(self, agent: AgentProcess) -> None:
        with self._changed:
            self._agents.discard(agent)

    def forget(self) -> None:
        """Drop every agent without stopping it (in a forked copy of the host, where the
        lock may be held by a thread that did not survive the fork)."""
        self._changed = threading.Condition()
        self._agents = set()
        self._starting = 0
        self._stopped = False

    def stop_all(self) -> None:
        """Stop every agent still running, once those being started exist (at host exit)."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._starting == 0, self.EXIT_WAIT)
            agents, self._agents = list(self._agents), set()
        for agent in agents:
            agent.terminate()


class _Spares:
    """One started, unclaimed agent per configuration, so the next environment with the
    same settings starts without waiting for Python and gRPC to load.

    A spare holds its own session secrets (it serves exactly one session once claimed).
    Unclaimed spares exit by themselves after their heartbeat timeout; stale ones are
    reaped here, and all are stopped when the host exits (as every agent is).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spares: dict[AgentConfig, AgentProcess] = {}
        self._starting: dict[AgentConfig, threading.Event] = {}

    def take(self, config: AgentConfig, wait: float) -> AgentProcess | None:
        """A ready spare for ``config`` (young enough to be claimed safely), or ``None``.

        A spare that is still starting is waited for (up to ``wait`` seconds): starting a
        second agent beside it would only make both slower.
        """
        with self._lock:
            spare = self._spares.pop(config, None)
            starting = self._starting.get(config)
        if spare is None and starting is not None and starting.wait(wait):
            with self._lock:
                spare = self._spares.pop(config, None)
        if spare is None:
            return None
        fresh = time.monotonic() - spare.started < config.heartbeat_timeout / 2
        # A spare whose socket directory was removed under it (a temp cleaner) cannot be
        # reached: it would only time out.
        if spare.alive() and fresh and os.path.isdir(spare.dir):
            return spare
        spare.terminate()
        return None

    def refill(self, config: AgentConfig, ready_timeout: float) -> None:
        """Start a spare for ``config`` in the background unless one exists or is starting."""
        with self._lock:
            if config in self._spares or config in self._starting:
                return
            done = self._starting[config] = threading.Event()

        def start() -> None:
            spare: AgentProcess | None = None
            try:
                secrets = AgentSecrets(new_token(), make_tls_material() if config.tls else None)
                spare = AgentProcess(config, secrets, ready_timeout, fork=True)
                spare.wait_ready()
            except Exception:
                log.debug("could not start a spare agent", exc_info=True)
                if spare is not None:
                    spare.terminate()
                spare = None
            old = None
            with self._lock:
                del self._starting[config]
                if spare is not None:
                    old = self._spares.pop(config, None)
                    self._spares[config] = spare
            done.set()
            if old is not None:
                old.terminate()

        threading.Thread(target=start, name="rlm-agent-prewarm", daemon=True).start()

    def forget(self) -> None:
        """Drop every spare without stopping it (they belong to the parent of a forked
        host)."""
        self._lock = threading.Lock()
        self._spares, self._starting = {}, {}


_spares = _Spares()
_live_agents = _LiveAgents()
atexit.register(_live_agents.stop_all)  # runs before the fork servers' (registered earlier)


def _start_afresh_after_fork() -> None:
    """In a forked copy of the host process: the spawner thread did not survive the fork,
    and the spares and fork servers are the parent's, so start with none of them."""
    global _spawner
    _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlm-agent-spawner")
    _spares.forget()
    _fork_servers.forget()
    _live_agents.forget()


os.register_at_fork(after_in_child=_start_afresh_after_fork)


class SubprocessLauncher(Launcher):
    """Starts ``python -m rlm_core.agent`` as a child process on a private Unix socket.

    With ``prewarm`` (the default) it hands out an agent started ahead of need when one is
    ready, and starts the next one in the background.
    """

    def __init__(
        self,
        python: str | None = None,
        memory_limit_mb: int | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
        prewarm: bool = True,
        prefix: Sequence[str] = (),
        share_fork_server: bool = False,
        command: CommandHook | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.memory_limit_mb = memory_limit_mb
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.prewarm = prewarm
        self.prefix = tuple(prefix)
        self.share_fork_server = share_fork_server
        self.command = command
        self.agent: AgentProcess | None = None
        self._lifetime: threading.Timer | None = None

    def launch(self, request: LaunchRequest) -> Dial:
        """Claim a spare agent or start one; hand it the secrets on stdin."""
        secrets = request.secrets
        ready_timeout = min(self.ready_timeout, request.remaining() or self.ready_timeout)
        config = AgentConfig(
            self.python,
            self.memory_limit_mb,
            tuple(sorted(self.extra_env.items())),
            request.heartbeat_timeout,
            secrets.tls is not None,
            self.prefix,
            self.share_fork_server,
        )
        # A custom command hook is opaque: its agents are never spares for another one.
        spares = self.prewarm and self.command is None
        agent = _spares.take(config, wait=ready_timeout) if spares else None
        if agent is None:
            agent = self.agent = AgentProcess(
                config, secrets, ready_timeout, fork=self.prewarm, command=self.command
            )
            agent.wait_ready()  # on failure the environment calls terminate()
        else:
            request.secrets = agent.secrets  # a spare was started with secrets of its own
        self.agent = agent
        if spares:
            _spares.refill(config, self.ready_timeout)
        if request.max_lifetime is not None:  # what a provider's server-side timeout does
            self._lifetime = threading.Timer(request.max_lifetime, agent.terminate)
            self._lifetime.daemon = True
            self._lifetime.start()
        return agent.route

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The child's return code (``-N`` for signal N) once it has exited."""
        return None if self.agent is None else process_status(self.agent.process, wait)

    def diagnostics(self) -> str:
        """The agent's last stderr lines."""
        return "" if self.agent is None else self.agent.diagnostics()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return None if self.agent is None else self.agent.process.pid

    def shared_dir(self) -> str | None:
        """The agent's private socket directory: large contexts are handed over as files."""
        return None if self.agent is None else self.agent.dir

    @property
    def process(self) -> subprocess.Popen[str] | ForkedProcess | None:
        """The child process (``None`` before :meth:`launch`)."""
        return None if self.agent is None else self.agent.process

    @property
    def _dir(self) -> str | None:
        return None if self.agent is None else self.agent.dir

    def terminate(self) -> None:
        """Stop the child and remove its socket directory."""
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self.agent is not None:
            self.agent.terminate()


class SubprocessEnvironment(AgentEnvironment):
    """Cells run in a child Python process; see the module docstring.

    ``environment_kwargs`` beyond :class:`AgentEnvironment`'s: ``python`` (interpreter,
    default this one), ``memory_limit_mb`` (address-space limit of the child: the agent
    itself, interpreter, gRPC and thread stacks, takes about 250 MB of it, so add what the
    cells need on top), ``env`` (extra environment variables) and ``prewarm`` (default
    true: keep one agent started ahead of need for the next environment with the same
    settings; it exits by itself after ``heartbeat_timeout`` seconds unclaimed).
    """

    name = "subprocess"
    capabilities = AgentEnvironment.capabilities | {MEMORY_LIMIT}
    launcher_class = SubprocessLauncher

    def __init__(
        self,
        python: str | None = None,
        memory_limit_mb: int | None = None,
        env: dict[str, str] | None = None,
        prewarm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_range(
            "memory_limit_mb", memory_limit_mb, at_least=1, hint="None means no memory limit"
        )
        self.python = python
        self.memory_limit_mb = memory_limit_mb
        self.env = env
        self.prewarm = prewarm
        self.launcher: SubprocessLauncher | None = None

    command_prefix: ClassVar[tuple[str, ...]] = ()
    """A command the agent runs under, e.g. ``("unshare", "--net", "--")``: a wrapper
    environment is a subclass that sets it (and adds the capabilities it guarantees)."""

    share_fork_server: ClassVar[bool] = False
    """Whether agents under :attr:`command_prefix` may be forked from one fork server
    started under it. They then share its namespaces (one network, one mount table), so
    leave it false when each sandbox must be its own; agents are then started afresh
    (about 100 ms more per start)."""

    def agent_command(self, argv: list[str]) -> list[str]:
        """The command that starts an agent, given its command line (with
        :attr:`command_prefix` applied). Override to wrap it further; the default returns
        it as it is. An overriding environment's agents are started afresh."""
        return argv

    def make_launcher(self) -> Launcher:
        """A :class:`SubprocessLauncher` with this environment's settings."""
        hooked = type(self).agent_command is not SubprocessEnvironment.agent_command
        self.launcher = SubprocessLauncher(
            self.python,
            self.memory_limit_mb,
            self.env,
            ready_timeout=self.startup_timeout,
            prewarm=self.prewarm,
            prefix=self.command_prefix,
            share_fork_server=self.share_fork_server,
            command=self.agent_command if hooked else None,
        )
        return self.launcher

    @property
    def agent_pid(self) -> int | None:
        """The id of the process that runs the cells (changes after a restart). On Linux
        it is a child of :attr:`SubprocessLauncher.pid`, the agent's supervisor."""
        if self.agent_info is not None and self.agent_info.pid:
            return int(self.agent_info.pid)
        return None if self.launcher is None else self.launcher.pid
