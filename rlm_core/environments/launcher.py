"""The launcher contract: the only provider-specific part of a remote environment.

A :class:`Launcher` gets one :class:`LaunchRequest`, creates the sandbox, starts the agent
in it and returns a connection over one of the core's carriers
(:class:`~rlm_core.bridge.carriers.Dial`, :class:`~rlm_core.bridge.carriers.Stdio` or
:class:`~rlm_core.bridge.carriers.Reverse`). The request is one object, so it can grow
without breaking launchers. A launcher written for the first contract,
``launch(secrets, heartbeat_timeout) -> Endpoint``, keeps working: it is called the old way
after one :class:`DeprecationWarning` per launcher class.
"""

from __future__ import annotations

import atexit
import inspect
import json
import logging
import os
import shlex
import socket
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from secrets import token_hex
from typing import TYPE_CHECKING, Any, Literal

from rlm_core import __version__
from rlm_core.bridge.carriers import CARRIERS, Connection, Dial, Framing
from rlm_core.bridge.tls import TLSMaterial

if TYPE_CHECKING:
    from rlm_core.bridge.carriers.reverse import ReverseListener

log = logging.getLogger("rlm_core.environments")

Carrier = Literal["dial", "stdio", "reverse"]


CALL_TIMEOUT_MARGIN = 5.0
"""Seconds a provider SDK call may run past the start's deadline
(:meth:`LaunchRequest.call_timeout`)."""


@dataclass(frozen=True)
class AgentSecrets:
    """What an agent needs to authenticate its host: the token and optional TLS material.

    Launchers deliver :meth:`to_json` to the agent through stdin or a file that the agent
    deletes, never through the command line or the environment of other processes. (The
    ``stdio`` carrier delivers them itself.)
    """

    token: str
    tls: TLSMaterial | None = None

    def to_json(self) -> str:
        """One JSON line for ``python -m rlm_core.agent --secrets-stdin``."""
        data = {"token": self.token}
        if self.tls is not None:
            data["tls_cert"] = self.tls.certificate.decode()
            data["tls_key"] = self.tls.private_key.decode()
        return json.dumps(data)

    def __repr__(self) -> str:
        return f"AgentSecrets(token=<hidden>, tls={self.tls is not None})"


SANDBOX_LABEL = "rlm-core"
"""The label every sandbox started by rlm-core carries (value: the rlm-core version)."""


@dataclass
class LaunchRequest:
    """Everything a launcher is told about the agent it starts.

    New fields may be added; launchers read the ones they need.
    """

    environment: str
    """The environment's name (for messages, tags and sandbox names)."""
    secrets: AgentSecrets
    """The session's token and TLS material; never put them in argv or logs. A launcher
    that hands over an agent it started ahead of time, with secrets of its own, sets this
    to those secrets."""
    heartbeat_timeout: float
    """The agent exits once the host has been silent this long (pass it to the agent;
    :meth:`agent_argv` does)."""
    deadline: float
    """A :func:`time.monotonic` time by which :meth:`Launcher.launch` must return."""
    max_lifetime: float | None = None
    """The longest the sandbox may live, in seconds (``None``: the provider's default):
    pass it to the provider's own server-side timeout, so a sandbox whose host vanished
    is reaped even if nothing else notices."""
    progress: Callable[[str], None] = field(default=lambda message: None, repr=False)
    """Report a step of a slow start (``"building the image"``); shown to the user."""
    session_id: str = field(default_factory=lambda: token_hex(8))
    """A random id for this sandbox's session (in :attr:`labels`)."""

    @property
    def labels(self) -> dict[str, str]:
        """Labels (tags, metadata) to give the sandbox, so that it can be listed and
        cleaned up by tag: ``rlm-core`` (the version; every sandbox rlm-core starts has
        it), ``rlm-session``, ``rlm-environment`` and ``rlm-host`` (host name and pid)."""
        return {
            SANDBOX_LABEL: __version__,
            "rlm-session": self.session_id,
            "rlm-environment": self.environment,
            "rlm-host": f"{socket.gethostname()}:{os.getpid()}",
        }

    def remaining(self) -> float:
        """Seconds left until :attr:`deadline` (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def call_timeout(self) -> float:
        """A timeout for one provider SDK call made during the start: the seconds left
        until :attr:`deadline` (at least 1) plus :data:`CALL_TIMEOUT_MARGIN`. When the
        start runs out of time, its own deadline then reports it (naming the step it was
        on), not whichever SDK call was under way; the SDK's timeout stays a backstop."""
        return max(self.remaining(), 1.0) + CALL_TIMEOUT_MARGIN

    def agent_argv(
        self,
        carrier: Carrier = "dial",
        *,
        python: str = "python3",
        listen: str | None = None,
        dial: str | None = None,
        framing: Framing = "binary",
        secrets_file: str | None = None,
        bundle: str | None = None,
        extra: Sequence[str] = (),
    ) -> list[str]:
        """The agent's command line for ``carrier``.

        * ``dial``: the agent listens on ``listen`` (default ``0.0.0.0:0``; it prints the
          port it got in its ready line);
        * ``stdio``: the agent relays over its stdin and stdout (``framing``);
        * ``reverse``: the agent connects to ``dial`` (``HOST:PORT``).

        Secrets come on stdin, or from ``secrets_file`` (which the agent deletes once
        read) when given. ``bundle`` is the sandbox path of the shipped agent
        (:func:`rlm_core.environments.shipping.agent_bundle`), run instead of
        ``-m rlm_core.agent``. ``extra`` is appended (e.g. ``["--memory-limit-mb", "512"]``).
        """
        if carrier not in CARRIERS:
            raise ValueError(f"carrier must be one of {CARRIERS}, not {carrier!r}")
        argv = [python, bundle] if bundle else [python, "-m", "rlm_core.agent"]
        if carrier == "dial":
            argv += ["--listen", listen or "0.0.0.0:0"]
        elif carrier == "stdio":
            argv += ["--stdio", "--framing", framing]
        else:
            if not dial:
                raise ValueError("the reverse carrier needs dial='HOST:PORT' (the tunnel)")
            argv += ["--dial", dial]
        if carrier == "stdio" or secrets_file is None:
            argv.append("--secrets-stdin")
        else:
            argv += ["--secrets-file", secrets_file]
        argv += ["--heartbeat-timeout", f"{self.heartbeat_timeout:g}", *extra]
        return argv

    def agent_command(self, carrier: Carrier = "dial", **options: Any) -> str:
        """:meth:`agent_argv` as one shell-quoted string (for SDKs that take a string)."""
        return shlex.join(self.agent_argv(carrier, **options))

    def reverse_listener(self, host: str = "127.0.0.1", port: int = 0) -> ReverseListener:
        """Open a host-side listener for the ``reverse`` carrier, accepting only this
        session's agent. Expose ``listener.address`` through a tunnel, start the agent
        with ``agent_argv("reverse", dial=...)`` and return ``Reverse(listener)``."""
        from rlm_core.bridge.carriers.reverse import ReverseListener

        listener = ReverseListener(host, port)
        listener.expect(self.secrets.token)
        return listener


class Launcher(ABC):
    """Starts one agent and stops it: the only provider-specific part of an environment.

    Must implement :meth:`launch` and :meth:`terminate`; the rest is optional.
    """

    @abstractmethod
    def launch(self, request: LaunchRequest) -> Connection:
        """Create the sandbox and start the agent in it; return how to reach it.

        Raise any exception to fail the start: the environment calls :meth:`terminate`,
        and reports the exception's message once, with :meth:`exit_status` and
        :meth:`diagnostics`. Must return by ``request.deadline``.
        """

    @abstractmethod
    def terminate(self) -> None:
        """Stop the agent and the sandbox. Safe to call twice or before :meth:`launch`."""

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status once it has ended (``-N``: killed by signal N), waiting
        up to ``wait`` seconds; ``None`` while it runs or when the provider cannot tell."""
        return None

    def diagnostics(self) -> str:
        """The last lines the agent wrote to its stderr, when the provider has them."""
        return ""

    def shared_dir(self) -> str | None:
        """A private directory that both the host and the agent (``--shared-dir``) can use,
        for sandboxes on the host's own machine; large contexts then travel as a file
        instead of as streamed chunks. ``None`` (the default) for remote sandboxes."""
        return None

    @property
    def sandbox_id(self) -> str | None:
        """The provider's id of the sandbox (for logs and :meth:`cleanup`), once known."""
        return None

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """The ids of this provider's sandboxes that are still running (those carrying
        ``tag`` when given), as the provider lists them; ``None`` (the default) for a
        provider that cannot list. The conformance suite checks that a closed
        environment's sandbox is no longer listed."""
        return None

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Stop leftover sandboxes of this provider, by id or by tag (the value of one of
        their :attr:`LaunchRequest.labels`, or of a tag the plugin adds), and return the ids
        stopped; with neither, every sandbox carrying the ``rlm-core`` label. The default
        stops nothing (a provider without listing support)."""
        return []


class _ExitTerminator:
    """Launchers whose sandboxes end at interpreter exit unless they ended before.

    It runs when the interpreter starts shutting down, before it waits for non-daemon
    threads (``threading``'s own exit hooks, as :mod:`concurrent.futures` uses them): an
    SDK's non-daemon threads, such as a WebSocket reader, end once their sandbox's stream
    is closed, and would otherwise keep the interpreter from ever reaching ``atexit``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._launchers: set[Launcher] = set()
        self._registered = False

    def add(self, launcher: Launcher) -> None:
        with self._lock:
            self._launchers.add(launcher)
            if not self._registered:
                _register_before_thread_join(self.run)
                self._registered = True

    def discard(self, launcher: Launcher) -> None:
        with self._lock:
            self._launchers.discard(launcher)

    def forget(self) -> None:
        """In a forked copy of the host: the sandboxes are the parent's."""
        self._lock = threading.Lock()
        self._launchers = set()

    def run(self) -> None:
        with self._lock:
            launchers, self._launchers = list(self._launchers), set()
        for launcher in launchers:
            try:
                launcher.terminate()
            except Exception as exc:  # the others still get their turn
                log.warning("could not stop a sandbox at exit: %s", exc)


def _register_before_thread_join(hook: Callable[[], None]) -> None:
    """Run ``hook`` at shutdown before non-daemon threads are joined (``atexit`` where
    this interpreter has no such hook, or is already shutting down)."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(hook)
            return
    except RuntimeError:  # "can't register atexit after shutdown"
        pass
    atexit.register(hook)


_exit_terminator = _ExitTerminator()
os.register_at_fork(after_in_child=_exit_terminator.forget)


def terminate_at_exit(launcher: Launcher) -> None:
    """Have ``launcher.terminate()`` called at interpreter exit, unless
    :func:`terminated_before_exit` says it already ran. It runs as the interpreter starts
    shutting down, before non-daemon threads are joined and before any ``atexit`` handler
    (so while the SDK still works); call it once the launcher has something to end."""
    _exit_terminator.add(launcher)


def terminated_before_exit(launcher: Launcher) -> None:
    """``launcher`` has terminated its sandbox: nothing is left to do for it at exit."""
    _exit_terminator.discard(launcher)


_warned: set[type] = set()


def is_legacy_launcher(launcher: Launcher) -> bool:
    """Whether ``launcher.launch`` has the first contract's ``(secrets, heartbeat_timeout)``
    signature."""
    try:
        parameters = list(inspect.signature(launcher.launch).parameters)
    except (TypeError, ValueError):
        return False
    return len(parameters) == 2 and parameters[1] == "heartbeat_timeout"


def call_launch(launcher: Launcher, request: LaunchRequest) -> Connection:
    """``launcher.launch(request)``, or the first contract's call for an old launcher
    (with one :class:`DeprecationWarning` per launcher class)."""
    if not is_legacy_launcher(launcher):
        return launcher.launch(request)
    kind = type(launcher)
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(
            f"{kind.__qualname__}.launch(secrets, heartbeat_timeout) is the first launcher "
            "contract; write launch(self, request: LaunchRequest) returning Dial, Stdio "
            "or Reverse instead (request.secrets and request.heartbeat_timeout hold the "
            "old arguments)",
            DeprecationWarning,
            stacklevel=4,
        )
    legacy: Any = launcher.launch
    endpoint = legacy(request.secrets, request.heartbeat_timeout)
    to_dial = getattr(endpoint, "to_dial", None)
    if to_dial is None:
        raise TypeError(
            f"{kind.__qualname__}.launch returned {type(endpoint).__name__}, not an Endpoint"
        )
    dial: Dial = to_dial()
    return dial


def describe_status(status: int | None) -> str:
    """An exit status in words: ``exit status 1``, ``killed by SIGKILL``."""
    if status is None:
        return "exit status unknown"
    if status < 0:
        import signal

        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exit status {status}"
