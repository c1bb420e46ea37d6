"""The launcher: create a sandbox, start the agent in it, hand back a ``stdio`` carrier.

Written as against a cloud provider's SDK (here :mod:`rlm_example.sandbox`, imported only
when a sandbox is made, listed or deleted): the agent's command line goes through the
sandbox's shell, and the bridge runs over the exec handle's stdin and stdout, so the
sandbox needs no network at all.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO, cast

from rlm_core.bridge.carriers import Connection, Stdio
from rlm_core.bridge.carriers.stdio import pipe_stream
from rlm_core.environments.launcher import (
    Launcher,
    LaunchRequest,
    terminate_at_exit,
    terminated_before_exit,
)
from rlm_core.environments.launching import StderrTail, process_status

if TYPE_CHECKING:
    from rlm_example.sandbox import Sandbox


class ExampleLauncher(Launcher):
    """Starts one agent in one sandbox of :mod:`rlm_example.sandbox`."""

    def __init__(self, python: str, tag: str | None, memory_limit_mb: int | None) -> None:
        self.python = python
        self.tag = tag
        self.memory_limit_mb = memory_limit_mb
        self._sandbox: Sandbox | None = None
        self._sandbox_id: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None

    def launch(self, request: LaunchRequest) -> Connection:
        """Create the sandbox and start ``python -m rlm_core.agent --stdio`` in it."""
        from rlm_example.sandbox import Sandbox

        request.progress("creating the sandbox")
        self._sandbox = Sandbox.create(
            tag=self.tag, labels=request.labels, timeout=request.max_lifetime
        )
        self._sandbox_id = self._sandbox.id
        terminate_at_exit(self)  # deleted even if the host exits without closing it
        path = self._sandbox.path
        # The sandbox's directory is the agent's private directory (--shared-dir): the
        # agent removes it when it ends, its supervisor even when the host is killed. Its
        # socket, which the stdio relay reaches, gets a short path in it (at most 107 bytes).
        extra = ["--shared-dir", str(path), "--listen", f"unix:{path / 'agent.sock'}"]
        # The sandbox is on this machine, so its agent ends with the host: a supervisor
        # kills everything the cells started. A cloud sandbox has the agent's heartbeat
        # watchdog and the provider's own timeout (max_lifetime) for that instead.
        extra += ["--die-with-parent", "0"]
        if self.memory_limit_mb is not None:
            extra += ["--memory-limit-mb", str(self.memory_limit_mb)]
        command = request.agent_command("stdio", python=self.python, extra=extra)
        request.progress("starting the agent")
        # exec: the shell becomes the agent, so signals and the exit status are its own.
        self._process = process = self._sandbox.exec(f"exec {command}")
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        self._stderr = StderrTail(io.TextIOWrapper(process.stderr, errors="replace"))
        stream = pipe_stream(cast(BinaryIO, process.stdin), cast(BinaryIO, process.stdout))
        return Stdio(stream)

    def terminate(self) -> None:
        """Delete the sandbox (every process in it, then its directory)."""
        sandbox, self._sandbox = self._sandbox, None
        terminated_before_exit(self)
        if sandbox is not None:
            sandbox.delete()
        process = self._process
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10.0)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError, ValueError):
                        pipe.close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status once it has ended."""
        return None if self._process is None else process_status(self._process, wait)

    def diagnostics(self) -> str:
        """The last lines the agent wrote to its stderr."""
        return "" if self._stderr is None else self._stderr.text()

    @property
    def sandbox_id(self) -> str | None:
        """The sandbox's id, once it is created."""
        return self._sandbox_id

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """The ids of this machine's example sandboxes (with ``tag``, when given)."""
        from rlm_example.sandbox import list_sandboxes

        return list_sandboxes(tag)

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Delete leftover sandboxes by id, tag or label value (with neither: all of
        them); return the ids deleted."""
        from rlm_example.sandbox import delete_sandboxes

        return delete_sandboxes(ids, tag)
