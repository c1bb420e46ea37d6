"""The agent fork server: an interpreter with the agent's imports done, forking agents.

``python -m rlm_core.agent --fork-server FD`` loads gRPC, protobuf and the agent (about
100 ms of imports) once, starts no thread, and then serves requests on the Unix
``SOCK_SEQPACKET`` socket ``FD``. Each request is one message: JSON
``{"id": I, "argv": [...], "cwd": DIR, "env": {...}}`` with three file descriptors
attached (the new agent's stdin, stdout and stderr). The server forks; the child becomes a
session leader, takes those descriptors as 0, 1 and 2, moves to ``cwd``, takes ``env`` as
its environment and runs ``rlm_core.agent`` with
``argv`` plus ``--die-with-parent`` (this server), exactly as a freshly started agent
would. The server answers ``{"id": I, "pid": N}`` (or ``{"id": I, "error": ...}``), and
reports each child's end as ``{"exited": N, "code": C}`` (``C`` as ``subprocess``'s
``returncode``: negative for a signal). It exits when the socket closes; its children then
get their parent-death signal.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

MAX_MESSAGE = 1024 * 1024
"""Largest control message (the arguments and environment of one agent)."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one JSON control message (with ``fds`` attached)."""
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _run_child(
    control: socket.socket,
    selector: selectors.BaseSelector,
    pipe: tuple[int, int],
    request: dict[str, Any],
    fds: list[int],
    run_agent: Callable[[list[str]], int],
) -> NoReturn:
    """In the forked child: become the requested agent, never return to the server loop.

    The agent's end unwinds to the interpreter's own exit (``SystemExit``), so exit
    handlers, buffered files and non-daemon threads are dealt with as in a fresh agent.
    """
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the server's: it removes its dir
        selector.close()  # none of the server's descriptors stays open in the agent
        control.close()
        for fd in pipe:
            os.close(fd)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        server_dir = os.getcwd()
        os.chdir(request["cwd"])
        if sys.path and sys.path[0] == server_dir:  # ``-m`` put it first: now the agent's
            sys.path[0] = os.getcwd()
        if "env" in request:  # the host's environment now, not when this server started
            os.environ.clear()
            os.environ.update(request["env"])
        argv = [*request["argv"], "--die-with-parent", str(os.getppid())]
        sys.argv[1:] = argv  # as a freshly started agent sees it
    except BaseException:  # nothing of the agent ran: report and leave at once
        traceback.print_exc()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(1)
    try:
        code = run_agent(argv)
    except SystemExit:
        raise
    except BaseException:  # what the interpreter would print for a fresh agent
        traceback.print_exc()
        code = 1
    raise SystemExit(code)


def serve_forks(control_fd: int, run_agent: Callable[[list[str]], int]) -> int:
    """Fork agents on request until the control socket closes; each child runs
    ``run_agent(argv)`` (the agent's ``main``, passed in so this module does not import it)."""
    import rlm_core.agent.server  # noqa: F401  (the imports every agent needs)

    control = socket.socket(fileno=control_fd)
    read_end, wakeup = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(wakeup, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wakeup)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(read_end, selectors.EVENT_READ)
    gc.collect()
    gc.freeze()  # keep the shared pages shared: the collector would touch them in children
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, 3)
                except OSError:
                    data, fds = b"", []
                if not data:
                    return 0  # the host is gone
                try:
                    _fork(control, selector, (read_end, wakeup), data, fds, run_agent)
                except OSError:
                    return 0
            else:
                while True:
                    try:
                        if not os.read(read_end, 512):
                            break
                    except BlockingIOError:
                        break
                try:
                    _reap(control)
                except OSError:
                    return 0


def _fork(
    control: socket.socket,
    selector: selectors.BaseSelector,
    pipe: tuple[int, int],
    data: bytes,
    fds: list[int],
    run_agent: Callable[[list[str]], int],
) -> None:
    request_id = None
    try:
        request = json.loads(data)
        request_id = request.get("id")  # echoed: the host skips answers it gave up on
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
    except Exception as exc:
        for fd in fds:
            os.close(fd)
        send(control, {"id": request_id, "error": f"{type(exc).__name__}: {exc}"})
        return
    if pid == 0:
        _run_child(control, selector, pipe, request, fds, run_agent)
    for fd in fds:
        os.close(fd)
    send(control, {"id": request_id, "pid": pid})


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send(control, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
