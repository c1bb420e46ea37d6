"""``rlm conformance NAME``: run the rlm-conformance suite on an installed environment.

The suite is a separate distribution (``pip install rlm-conformance``); this command runs
``python -m pytest --pyargs rlm_conformance --rlm-environment NAME`` in a child process
and returns its exit status, so the suite's summary and pytest's own options work as usual.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from typing import TextIO

SUITE = "rlm_conformance"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``conformance`` subcommand."""
    parser = sub.add_parser(
        "conformance",
        help="run the conformance suite on an environment",
        description="Run the rlm-conformance suite (pip install rlm-conformance) on an "
        "installed environment. Arguments after `--` go to pytest, e.g. "
        "`rlm conformance subprocess -- -k CTX -x`.",
    )
    parser.add_argument("environment", help="the environment's name, e.g. subprocess")
    parser.add_argument(
        "--kwargs",
        metavar="JSON",
        default=None,
        help="the environment's settings as a JSON object",
    )
    parser.set_defaults(pytest_args=[])


def split_pytest_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``rlm conformance ... -- PYTEST_ARGS``: the part for ``rlm`` and the part for pytest."""
    if argv[:1] == ["conformance"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def command(args: argparse.Namespace) -> list[str]:
    """The pytest command line for ``args``."""
    extra = list(args.pytest_args)
    argv = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
        "--pyargs", SUITE, "--rlm-environment", args.environment,
    ]  # fmt: skip
    if args.kwargs is not None:
        argv += ["--rlm-environment-kwargs", args.kwargs]
    return argv + extra


def run(args: argparse.Namespace, stderr: TextIO) -> int:
    """Run the suite; 2 when it is not installed or the settings are not a JSON object."""
    if importlib.util.find_spec(SUITE) is None:
        print(
            "rlm: the conformance suite is not installed: pip install rlm-conformance",
            file=stderr,
        )
        return 2
    if args.kwargs is not None:
        try:
            settings = json.loads(args.kwargs)
        except json.JSONDecodeError as exc:
            print(f"rlm: --kwargs is not valid JSON: {exc}", file=stderr)
            return 2
        if not isinstance(settings, dict):
            print("rlm: --kwargs must be a JSON object", file=stderr)
            return 2
    return subprocess.call(command(args))
