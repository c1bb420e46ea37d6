"""The Docker launcher: one container per agent, reached over ``docker run -i``.

The engine's CLI runs ``docker run --interactive --rm`` with the container's labels and
limits; the agent bundle travels on its stdin (see :mod:`rlm_docker.command`) and the
``stdio`` carrier then uses the same stdin and stdout. The container ends with the session:
:meth:`DockerLauncher.terminate` removes it (``rm --force``), ``--rm`` removes one whose
agent exited, and the core's exit handler terminates it at host exit. A host that is
killed outright takes the CLI with it (parent-death signal), which closes the container's
stdin; the agent's heartbeat watchdog ends it in any case.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
from collections.abc import Iterable
from typing import Any, BinaryIO, cast

from rlm_core.bridge.carriers import Connection, Stdio
from rlm_core.environments.forkserver import die_with_starting_thread
from rlm_core.environments.launcher import (
    Launcher,
    LaunchRequest,
    terminate_at_exit,
    terminated_before_exit,
)
from rlm_core.environments.launching import StderrTail, process_status
from rlm_core.environments.remote import status_from_exit_code
from rlm_core.environments.shipping import agent_bundle
from rlm_core.environments.subprocess import start_process
from rlm_core.exceptions import SandboxError
from rlm_docker.command import ContainerSpec
from rlm_docker.engine import engine_name, engine_path, list_containers, remove_containers

REMOVE_TIMEOUT = 30.0
"""Seconds ``rm --force`` may take."""


def container_status(returncode: int | None) -> int | None:
    """The engine CLI reports a container killed by signal N as 128 + N; the core says -N."""
    return None if returncode is None else status_from_exit_code(returncode)


class DockerLauncher(Launcher):
    """One agent in one container of ``engine`` (``docker`` or ``podman``)."""

    def __init__(self, spec: ContainerSpec, engine: str | None = None) -> None:
        self.spec = spec
        self.engine = engine_name(engine)
        self._lock = threading.Lock()
        self._closed = False
        self._name: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None

    def launch(self, request: LaunchRequest) -> Connection:
        """Run the container, send the agent bundle, return the stdio carrier."""
        engine = engine_path(self.engine)
        bundle = agent_bundle()
        name = f"rlm-{request.session_id}"
        argv = [*die_with_starting_thread(), *self.spec.run_argv(engine, name, request, bundle)]
        with self._lock:
            if self._closed:
                raise SandboxError("the container was terminated before it started")
            self._name = name
            terminate_at_exit(self)
            request.progress(f"starting container {name} from {self.spec.image}")
            self._process = process = start_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ),
            )
        assert process.stdin is not None and process.stdout is not None
        self._stderr = StderrTail(
            io.TextIOWrapper(cast(Any, process.stderr), errors="replace"),
            ended=lambda: process.poll() is not None,
        )
        self._send_bundle(process, bundle.data, request)
        from rlm_core.bridge.carriers.stdio import pipe_stream

        stream = pipe_stream(cast(BinaryIO, process.stdin), cast(BinaryIO, process.stdout))
        return Stdio(stream, "binary")

    @staticmethod
    def _send_bundle(process: subprocess.Popen[bytes], data: bytes, request: LaunchRequest) -> None:
        """Write the bundle to the container's stdin, by the request's deadline (a thread
        writes, so a container that never reads cannot block the start)."""
        failure: list[BaseException] = []

        def write() -> None:
            try:
                assert process.stdin is not None
                process.stdin.write(data)
                process.stdin.flush()
            except (OSError, ValueError) as exc:
                failure.append(exc)

        writer = threading.Thread(target=write, name="rlm-docker-bundle", daemon=True)
        writer.start()
        writer.join(request.remaining())
        if writer.is_alive():
            raise SandboxError("the container did not read the agent bundle in time")
        if failure:
            raise SandboxError(f"the container ended before it read the agent: {failure[0]}")

    @property
    def sandbox_id(self) -> str | None:
        """The container's name (``rlm-<session id>``), once chosen."""
        return self._name

    def terminate(self) -> None:
        """Remove the container (killing everything in it), then end the CLI process."""
        with self._lock:
            self._closed = True
            name, process = self._name, self._process
        terminated_before_exit(self)
        if name is not None and process is not None:
            with contextlib.suppress(SandboxError):  # a missing engine has nothing running
                remove_containers(engine_path(self.engine), [name], REMOVE_TIMEOUT)
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=REMOVE_TIMEOUT)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The agent's exit status, as the engine CLI reports the container's."""
        process = self._process
        return None if process is None else container_status(process_status(process, wait))

    def diagnostics(self) -> str:
        """The last lines the container wrote to its stderr (and the CLI's own errors)."""
        return "" if self._stderr is None else self._stderr.text()

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Names of the rlm-core containers of ``$RLM_DOCKER_ENGINE`` (default ``docker``),
        running or stopped, with a label of value ``tag`` when given."""
        return list_containers(engine_path(), tag)

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Remove containers by name, or those listed for ``tag`` (with neither: every
        rlm-core container); return the names removed."""
        wanted = list(ids)
        if tag is not None or not wanted:
            wanted += list_containers(engine_path(), tag)
        return remove_containers(engine_path(), wanted)
