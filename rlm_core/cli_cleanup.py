"""``rlm cleanup NAME``: list, or stop, a provider's leftover sandboxes.

Sandboxes outlive their host only until their server-side lifetime runs out; this command
finds them sooner, through the launcher's class-level listing and clean-up
(:meth:`Launcher.list_sandboxes`, :meth:`Launcher.cleanup`).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.launcher import Launcher
from rlm_core.exceptions import ConfigurationError
from rlm_core.plugins import get_registry


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cleanup`` subcommand."""
    parser = sub.add_parser(
        "cleanup",
        help="list or stop leftover sandboxes of a provider",
        description="Without --tag, --id or --all: list the provider's running sandboxes "
        "that rlm-core started. With one of them: stop those sandboxes.",
    )
    parser.add_argument("environment", help="the provider's environment name, e.g. modal")
    parser.add_argument("--tag", help="stop the sandboxes carrying this tag (or session id)")
    parser.add_argument(
        "--id", dest="ids", action="append", default=[], metavar="ID", help="stop this sandbox"
    )
    parser.add_argument(
        "--all", action="store_true", help="stop every sandbox rlm-core started there"
    )


def launcher_of(name: str) -> type[Launcher]:
    """The launcher class of environment ``name`` (``ConfigurationError`` when it has
    none: not an agent-backed environment, or one that does not say)."""
    factory = get_registry().environment(name).factory
    if not (isinstance(factory, type) and issubclass(factory, AgentEnvironment)):
        raise ConfigurationError(f"the {name} environment starts no sandboxes to clean up")
    if factory.launcher_class is None:
        raise ConfigurationError(
            f"the {name} environment does not name its launcher class, so its sandboxes "
            "cannot be listed"
        )
    return factory.launcher_class


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    """List or stop; 1 when the provider cannot list its sandboxes."""
    launcher = launcher_of(args.environment)
    if not (args.tag or args.ids or args.all):
        listed = launcher.list_sandboxes()
        if listed is None:
            print(f"the {args.environment} provider cannot list its sandboxes", file=stdout)
            return 1
        for sandbox in listed:
            print(sandbox, file=stdout)
        print(f"{len(listed)} running; stop them with --all, --tag TAG or --id ID", file=stdout)
        return 0
    stopped = launcher.cleanup(ids=args.ids, tag=args.tag)
    for sandbox in stopped:
        print(f"stopped {sandbox}", file=stdout)
    print(f"{len(stopped)} stopped", file=stdout)
    return 0
