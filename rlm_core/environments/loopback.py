"""``loopback``: the agent as a local process, reached over any carrier.

A stand-in for a cloud sandbox, for tests, benchmarks and plugin authors: the launcher
starts ``python -m rlm_core.agent`` on this machine and connects to it exactly as a cloud
plugin would, over ``dial`` (loopback TCP), ``stdio`` (the process's own pipes) or
``reverse`` (the agent dials a host-side listener). It is not isolated in any way.

    RLM(environment=LoopbackEnvironment(carrier="stdio", framing="base64"), ...)

Two hooks let a test put a link between the two ends: :meth:`LoopbackLauncher.link_address`
(dial and reverse: where the other end connects, e.g. a delaying proxy) and
:meth:`LoopbackLauncher.link_stream` (stdio: wraps the process's pipes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, BinaryIO, cast

from rlm_core.bridge.carriers import Connection, Dial, Framing, Reverse, Stdio
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.launcher import Carrier, Launcher, LaunchRequest
from rlm_core.environments.launching import (
    StderrTail,
    process_status,
    start_agent,
    stop_agent_process,
    with_package_on_path,
)
from rlm_core.environments.subprocess import start_process


class LoopbackLauncher(Launcher):
    """Starts the agent as a local process and connects over ``carrier``."""

    def __init__(
        self,
        carrier: Carrier = "dial",
        framing: Framing = "binary",
        python: str | None = None,
        ship: bool = False,
    ) -> None:
        self.carrier = carrier
        self.framing = framing
        self.python = python or sys.executable
        self.ship = ship
        self.process: subprocess.Popen[Any] | None = None
        self._stderr: StderrTail | None = None
        self._dir: str | None = None

    # -- hooks --------------------------------------------------------------------------

    def link_address(self, host: str, port: int) -> tuple[str, int]:
        """Where the other end should connect to reach ``host:port`` (default: there)."""
        return host, port

    def link_stream(self, stream: Any) -> Any:
        """The stdio carrier's stream as the host sees it (default: unchanged)."""
        return stream

    def agent_environment(self) -> dict[str, str]:
        """The agent process's environment variables: the host's, with this ``rlm_core``
        on ``PYTHONPATH`` unless the agent is shipped (then it runs from its bundle)."""
        env = dict(os.environ)
        return env if self.ship else with_package_on_path(env)

    def _argv(self, request: LaunchRequest, carrier: Carrier, **options: Any) -> list[str]:
        """The agent's command line; shipped, it runs from the bundle in the private
        directory, as a cloud sandbox runs the bundle it was sent."""
        bundle = None
        if self.ship:
            from rlm_core.environments.shipping import agent_bundle

            bundle = str(agent_bundle().write(self._private_dir()))
        return request.agent_argv(carrier, python=self.python, bundle=bundle, **options)

    # -- the contract -------------------------------------------------------------------

    def _private_dir(self) -> str:
        """The sandbox's own directory (its working directory and socket), removed by
        :meth:`terminate` (an agent that is killed cannot remove it)."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rlm-loopback-")
        return self._dir

    def _socket(self) -> list[str]:
        """``--listen`` on a socket in the private directory."""
        return ["--listen", f"unix:{os.path.join(self._private_dir(), 'agent.sock')}"]

    def _start(self, argv: list[str], binary: bool) -> subprocess.Popen[Any]:
        env = self.agent_environment()
        self.process = start_process(
            [*argv, "--die-with-parent", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self._private_dir(),
            env=env,
            **({} if binary else {"encoding": "utf-8", "errors": "replace"}),
        )
        stderr = self.process.stderr
        if binary and stderr is not None:
            import io

            stderr = io.TextIOWrapper(stderr, encoding="utf-8", errors="replace")
        process = self.process
        self._stderr = StderrTail(stderr, ended=lambda: process.poll() is not None)
        return process

    def launch(self, request: LaunchRequest) -> Connection:
        """Start the agent and return the connection for :attr:`carrier`."""
        if self.carrier == "dial":
            argv = self._argv(request, "dial", listen="127.0.0.1:0")
            process = self._start(argv, binary=False)
            ready = start_agent(process, request.secrets.to_json(), request.deadline)
            host, port = self.link_address("127.0.0.1", ready.port)
            return Dial(f"{host}:{port}")
        if self.carrier == "stdio":
            argv = self._argv(request, "stdio", framing=self.framing, extra=self._socket())
            process = self._start(argv, binary=True)
            from rlm_core.bridge.carriers.stdio import pipe_stream

            assert process.stdin is not None and process.stdout is not None
            stream = pipe_stream(cast(BinaryIO, process.stdin), cast(BinaryIO, process.stdout))
            return Stdio(self.link_stream(stream), self.framing)
        listener = request.reverse_listener()
        try:
            host, port = self.link_address(*listener.address)
            argv = self._argv(request, "reverse", dial=f"{host}:{port}", extra=self._socket())
            process = self._start(argv, binary=False)
            start_agent(process, request.secrets.to_json(), request.deadline)
        except BaseException:
            listener.close()
            raise
        return Reverse(listener)

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent process's return code once it has ended."""
        return None if self.process is None else process_status(self.process, wait)

    def diagnostics(self) -> str:
        """The agent's last stderr lines."""
        return "" if self._stderr is None else self._stderr.text()

    def terminate(self) -> None:
        """Kill the agent's process group and wait for it."""
        process = self.process
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if process is None:
            return
        stop_agent_process(process)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()


class LoopbackEnvironment(AgentEnvironment):
    """The agent as a local process over ``carrier`` (``dial``, ``stdio`` or ``reverse``;
    ``framing`` for ``stdio``). With ``ship``, the agent runs from the bundle a cloud
    plugin ships (:mod:`rlm_core.environments.shipping`), not from the host's package. A
    stand-in for a cloud sandbox: not isolated."""

    name = "loopback"
    launcher_class = LoopbackLauncher

    def __init__(
        self,
        carrier: Carrier = "dial",
        framing: Framing = "binary",
        ship: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.carrier = carrier
        self.framing = framing
        self.ship = ship
        self.launcher: LoopbackLauncher | None = None

    def make_launcher(self) -> Launcher:
        """A :class:`LoopbackLauncher` for this environment's carrier."""
        self.launcher = LoopbackLauncher(self.carrier, self.framing, ship=self.ship)
        return self.launcher
