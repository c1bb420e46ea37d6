"""``python -m rlm_core.agent``: the in-sandbox agent (standard library, grpcio, protobuf).

    python -m rlm_core.agent --listen unix:/tmp/agent.sock --secrets-stdin
    python -m rlm_core.agent --listen 0.0.0.0:0 --secrets-file /run/rlm/secrets.json
    python -m rlm_core.agent --stdio --secrets-stdin [--framing base64]
    python -m rlm_core.agent --dial HOST:PORT --secrets-stdin

Secrets (``{"token": ..., "tls_cert": PEM, "tls_key": PEM}``) come as one JSON line on stdin,
or from a file that is deleted once read, or (token only) from ``RLM_AGENT_TOKEN``; never
from the command line. Once listening it prints ``RLM-AGENT-READY port=N pid=P``.

Relay carriers, for sandboxes without an inbound port (see :mod:`rlm_core.agent.relay`):
``--stdio`` relays the gRPC connection over stdin/stdout (the secrets line first, then the
ready line and frames; cell output goes to stderr), ``--dial HOST:PORT`` relays it over one
TCP connection to the host's listener. Either serves on a private Unix socket unless
``--listen unix:...`` is given.

``--repl MODULE:NAME`` (or ``RLM_AGENT_REPL``) runs cells in another namespace: a
:class:`~rlm_core.repl.REPLNamespace` subclass that runs them its own way (the
``rlm-ipython`` plugin's runs them through an IPython shell).

``--fork-server FD`` runs the fork server instead (see
:mod:`rlm_core.agent.forkserver`): same-host launchers fork agents from it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def _leave_with_launcher(launcher_pid: int | None, shared_dir: str | None) -> None:
    """For the fork server: exit (removing ``shared_dir``) when the launcher dies."""
    import os
    import signal

    def leave(*_: object) -> None:
        _remove(shared_dir)
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    if launcher_pid == 0:  # whoever started this process (a wrapper such as unshare)
        launcher_pid = os.getppid()
    if launcher_pid is not None:
        from rlm_core.agent.process_tree import set_parent_death_signal

        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != launcher_pid:  # the launcher died before the signal was armed
            leave()


def _remove(directory: str | None) -> None:
    if directory:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


def _limit_memory(memory_limit_mb: int | None) -> None:
    """Limit the address space; first cap glibc's malloc arenas at two: it reserves 64 MB of
    address space per arena (up to 8 per CPU, one per busy thread), and under an
    address-space limit those reservations, not the cell's data, would use up the limit."""
    if memory_limit_mb is not None:
        import ctypes
        import resource

        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to cap
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def build_parser() -> argparse.ArgumentParser:
    """The agent's command-line parser (launchers' argv is checked against it)."""
    parser = argparse.ArgumentParser(prog="python -m rlm_core.agent", description=__doc__)
    parser.add_argument(
        "--listen",
        default=None,
        help="gRPC address: HOST:PORT (port 0 picks a free one) or unix:/path/to.sock "
        "(default 127.0.0.1:0; with --stdio or --dial, a private Unix socket)",
    )
    carrier = parser.add_mutually_exclusive_group()
    carrier.add_argument(
        "--stdio",
        action="store_true",
        help="relay the gRPC connection over stdin/stdout (cell output goes to stderr)",
    )
    carrier.add_argument(
        "--dial",
        metavar="HOST:PORT",
        default=None,
        help="dial out to the host's reverse listener and relay over that connection",
    )
    parser.add_argument(
        "--framing",
        choices=("binary", "base64"),
        default="binary",
        help="frame encoding on the relay carrier (base64 for carriers that only pass text)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--secrets-stdin", action="store_true", help="read secrets from stdin")
    source.add_argument("--secrets-file", help="read secrets from this JSON file, then delete it")
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=30.0,
        help="exit when the host is silent this many seconds (default 30)",
    )
    parser.add_argument("--workers", type=int, default=32, help="gRPC worker threads")
    parser.add_argument(
        "--shared-dir",
        default=None,
        help="a private directory the host can also write: large contexts may arrive as "
        "files there instead of as streamed chunks (same-host sandboxes only)",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=int,
        default=None,
        help="cap this process's address space (cells get MemoryError beyond it)",
    )
    parser.add_argument(
        "--die-with-parent",
        type=int,
        default=None,
        metavar="PPID",
        help="run under a supervisor that ends the agent and everything it started when "
        "the process PPID (the launcher) dies (Linux); 0: the process that started the "
        "agent (a wrapper such as unshare)",
    )
    parser.add_argument(
        "--repl",
        default=os.environ.get("RLM_AGENT_REPL") or None,
        metavar="MODULE:NAME",
        help="run cells in the namespace this callable makes from the sub-call handler (a "
        "subclass of rlm_core.repl.REPLNamespace, imported at start; default "
        "$RLM_AGENT_REPL, else the plain namespace)",
    )
    parser.add_argument(
        "--fork-server",
        type=int,
        default=None,
        metavar="FD",
        help="serve fork requests on the Unix socket FD instead of serving a session",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until the session ends."""
    parser = build_parser()
    args = parser.parse_args(argv)
    relayed = args.stdio or args.dial is not None
    if relayed and args.listen is not None and not args.listen.startswith("unix:"):
        parser.error("--stdio and --dial relay to a Unix socket: --listen must be unix:PATH")
    if args.listen is None and not relayed:
        args.listen = "127.0.0.1:0"
    args.carrier_fds = None
    if args.fork_server is not None:
        _leave_with_launcher(args.die_with_parent, args.shared_dir)
        import os

        from rlm_core.agent.forkserver import serve_forks

        server = os.getpid()
        try:
            return serve_forks(args.fork_server, main)
        finally:
            if os.getpid() == server:  # not in a forked agent unwinding to its exit
                _remove(args.shared_dir)  # the launcher closed the control socket
    if args.die_with_parent is not None:
        from rlm_core.agent.supervisor import supervise

        supervise(args.die_with_parent, args.shared_dir)  # returns in the agent only
    if args.stdio:
        # Here, in the process that serves: with --die-with-parent the supervisor forked
        # above and keeps its inherited fds 0 and 1 without ever reading or writing them
        # (it runs no cell code and exits right after the agent), so the carrier is the
        # agent's alone, and the host sees its end of file once both have exited.
        from rlm_core.agent.relay import claim_stdio

        args.carrier_fds = claim_stdio()
    _limit_memory(args.memory_limit_mb)
    from rlm_core.agent.server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
