"""The ``rlm eval`` command: its flags and what it does with them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from rlm_core.cli_args import non_negative_int, positive_float, positive_int

DEFAULT_OUT = "rlm-eval"
"""Runs go to ``rlm-eval/<suite name>`` unless ``--out`` says otherwise."""
SUITES_HELP = "niah, oolong, oolong-pairs, codeqa or all"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``rlm`` command's subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="run a task suite under one or more configurations and score it",
        description="Run every task of SUITE under each configuration, score the answers and "
        "print a summary side by side. Results are appended to OUT/results.jsonl as tasks "
        "finish; running the same command again continues an interrupted run.",
    )
    parser.add_argument(
        "suite",
        metavar="SUITE",
        help=f"a bundled suite ({SUITES_HELP}; also as builtin:NAME) or a JSONL suite file",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="a TOML configuration (repeat to compare several); default: one built from "
        "--backend, --model, --base-url, --environment, --max-depth and --max-iterations",
    )
    parser.add_argument(
        "--backend",
        help="LM backend of the default configuration (default: openai). 'scripted' is a "
        "deterministic stand-in LM that solves the bundled suites with code, not a model",
    )
    parser.add_argument("--model", help="model name of the default configuration")
    parser.add_argument("--base-url", help="API base URL of the default configuration")
    parser.add_argument("--environment", help="where cells run (default: local)")
    parser.add_argument("--max-depth", type=non_negative_int, help="recursion depth (default 1)")
    parser.add_argument(
        "--max-iterations", type=positive_int, help="root turns per task (default 30)"
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run each configuration as the plain model without the REPL (one LM call "
        "with the whole context), named NAME-plain",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: threads of this process (default); ray: Ray tasks on a cluster "
        "(pip install 'rlm-core[ray]')",
    )
    parser.add_argument(
        "--address", help="Ray cluster address for --engine ray (default: start a local one)"
    )
    parser.add_argument(
        "-n", type=positive_int, help="tasks per context length (bundled suites: default 10)"
    )
    parser.add_argument(
        "--lengths",
        help="context lengths of a bundled suite in tokens, e.g. 8k,64k (default 8k,32k)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of a bundled suite's tasks (default 0)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        help="tasks at once (with --engine ray: per node) (default 4)",
    )
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        default=2,
        help="further runs of a task that failed for a retryable reason (default 2)",
    )
    parser.add_argument(
        "--rate-limit",
        type=positive_float,
        metavar="RPS",
        help="LM requests per second toward each provider, shared by all workers (for "
        "configurations that set no rate_limit)",
    )
    parser.add_argument("--out", help=f"output directory (default: {DEFAULT_OUT}/SUITE_NAME)")
    parser.add_argument("--no-plot", action="store_true", help="do not write scores.png")
    parser.add_argument(
        "--write-suite",
        metavar="FILE",
        help="write the suite's tasks as JSONL to FILE and exit without running them",
    )
    return parser


_QUICK_FLAGS = ("backend", "model", "base_url", "environment", "max_depth", "max_iterations")


def configs_from_args(args: argparse.Namespace) -> list[Any]:
    """The configurations the flags describe: ``--config`` files, or one from the flags."""
    from dataclasses import replace

    from rlm_core.eval.config import config_from_dict, load_config
    from rlm_core.exceptions import ConfigurationError

    quick = {name: getattr(args, name) for name in _QUICK_FLAGS if getattr(args, name) is not None}
    if args.config:
        if quick:
            flags = ", ".join("--" + name.replace("_", "-") for name in quick)
            raise ConfigurationError(f"{flags} cannot be combined with --config")
        configs = [load_config(path) for path in args.config]
    else:
        data: dict[str, Any] = {"backend": quick.get("backend", "openai")}
        if "model" in quick:
            data["model"] = quick["model"]
        if "base_url" in quick:
            data["backend_kwargs"] = {"base_url": quick["base_url"]}
        for name in ("environment", "max_depth", "max_iterations"):
            if name in quick:
                data[name] = quick[name]
        if data["backend"] == "openai" and "model" not in data:
            raise ConfigurationError(
                "pass --config FILE, or --model NAME (and --base-url for a local server), "
                "or --backend scripted for the offline stand-in LM"
            )
        configs = [config_from_dict(data, str(data.get("model") or data["backend"]), "flags")]
    if args.rate_limit is not None:
        configs = [
            c if c.rate_limit is not None else replace(c, rate_limit=args.rate_limit)
            for c in configs
        ]
    return configs


def run_command(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """``rlm eval``: returns the exit status (errors are raised for the caller to report)."""
    from rlm_core.eval.api import run
    from rlm_core.eval.suites import load_suite, parse_lengths
    from rlm_core.eval.tasks import write_tasks

    lengths = parse_lengths(args.lengths) if args.lengths else None
    suite = load_suite(args.suite, n=args.n, lengths=lengths, seed=args.seed)
    if args.write_suite:
        count = write_tasks(suite.tasks, args.write_suite)
        print(f"rlm eval: wrote {count} tasks to {args.write_suite}", file=stderr)
        return 0
    configs = configs_from_args(args)
    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / suite.name
    print(
        f"rlm eval: {suite.name}, {len(suite.tasks)} tasks, configurations: "
        f"{', '.join(c.name for c in configs)}{' (+ plain baselines)' if args.baseline else ''}"
        f"; results in {out}",
        file=stderr,
    )
    try:
        done = run(
            suite,
            configs,
            args.engine,
            out_dir=out,
            concurrency=args.concurrency,
            retries=args.retries,
            address=args.address,
            baseline=args.baseline,
            progress=stderr,
            plot=not args.no_plot,
        )
    except KeyboardInterrupt:
        print(
            f"rlm eval: interrupted; finished tasks are saved in {out}/results.jsonl: run the "
            "same command again to continue",
            file=stderr,
        )
        raise
    print(done.to_markdown(), file=stdout)
    print(
        f"rlm eval: {done.ran} tasks run, {done.resumed} already done; "
        f"results: {out / 'results.jsonl'}, summary: {out / 'summary.md'}",
        file=stderr,
    )
    if not args.no_plot:
        print(f"rlm eval: {done.plot_message}", file=stderr)
    return 0
