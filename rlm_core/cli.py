"""The ``rlm`` command: run an RLM over files, list plugins, run the demo.

    rlm run "What changed in 2021?" --context report.txt --model gpt-4o-mini
    cat notes.txt | rlm run "Summarise the open questions"
    rlm environments
    rlm backends
    rlm demo
    rlm view logs/rlm_2026-01-01_12-00-00_1a2b3c4d.jsonl
    rlm eval niah --backend scripted --baseline

Exit status: 0 on success, 2 for usage and configuration errors (a missing context file,
an unknown environment or backend, a missing API key, ...), 3 when a limit stopped the run
(``--max-timeout``, ``--max-tokens``, ``--max-budget``, ``--max-errors``; the best answer so
far is printed when there is one), 130 when interrupted, 1 for unexpected failures.

Listing plugins imports no LM or sandbox SDK.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rlm_core.cli_args import non_negative_int, port, positive_float, positive_int
from rlm_core.exceptions import (
    CancellationError,
    LimitExceededError,
    MissingAPIKeyError,
    RLMError,
)

if TYPE_CHECKING:
    from rlm_core.plugins import Registration

PROG = "rlm"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LIMIT = 3
EXIT_INTERRUPTED = 130
BUILTIN_DISTRIBUTION = "rlm-core (built-in)"


class ContextFileError(RLMError):
    """A ``--context`` file is missing or unreadable, or no context was given."""


def _version() -> str:
    from rlm_core import __version__

    return __version__


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _error(message: str, stderr: TextIO) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=stderr)


# -- context ----------------------------------------------------------------------------


def read_context(paths: Sequence[str] | None, stdin: TextIO) -> str | list[str]:
    """Read the context: one file gives a ``str``, several a ``list[str]``.

    No paths (or ``-``) reads standard input. Raises :class:`ContextFileError` for a
    missing or unreadable file, ``-`` given twice, or an interactive stdin with no file.
    """
    names = list(paths) if paths else ["-"]
    if names.count("-") > 1:
        raise ContextFileError("'-' (standard input) can be given only once to --context")
    texts: list[str] = []
    for name in names:
        if name == "-":
            if stdin.isatty():
                raise ContextFileError(
                    "no context: pass --context FILE [FILE ...] or pipe the text on stdin"
                )
            texts.append(stdin.read())
            continue
        path = Path(name)
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            raise ContextFileError(f"context file not found: {name}") from None
        except IsADirectoryError:
            raise ContextFileError(f"context file is a directory: {name}") from None
        except OSError as exc:
            raise ContextFileError(
                f"cannot read context file {name}: {exc.strerror or exc}"
            ) from None
    return texts[0] if len(texts) == 1 else texts


# -- tables -----------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a header rule."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _origin(reg: Registration) -> tuple[str, str]:
    if reg.distribution is None:
        return BUILTIN_DISTRIBUTION, _version()
    return reg.distribution, reg.version or "-"


def _cmd_environments(args: argparse.Namespace, stdout: TextIO) -> int:
    from rlm_core.plugins import PROVIDER_DISTRIBUTIONS, get_registry

    registrations = get_registry().environments()
    rows = [
        [reg.name, *_origin(reg), ", ".join(sorted(reg.capabilities)) or "-"]
        for reg in registrations
    ]
    print(format_table(["NAME", "DISTRIBUTION", "VERSION", "CAPABILITIES"], rows), file=stdout)
    installed = {reg.name for reg in registrations}
    missing = [
        [name, f"pip install {dist}"]
        for name, dist in PROVIDER_DISTRIBUTIONS.items()
        if name not in installed
    ]
    if missing:
        print("\nProvider environments available as plugins:", file=stdout)
        for name, command in missing:
            print(f"  {name.ljust(max(len(n) for n, _ in missing))}  {command}", file=stdout)
    return EXIT_OK


def _cmd_backends(args: argparse.Namespace, stdout: TextIO) -> int:
    from rlm_core.plugins import get_registry

    rows = [[reg.name, *_origin(reg)] for reg in get_registry().backends()]
    print(format_table(["NAME", "DISTRIBUTION", "VERSION"], rows), file=stdout)
    return EXIT_OK


# -- run --------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    context = read_context(args.context, stdin)

    from rlm_core.logger import RLMLogger
    from rlm_core.progress import Progress
    from rlm_core.rlm import RLM

    backend_kwargs: dict[str, Any] = {}
    if args.model:
        backend_kwargs["model_name"] = args.model
    if args.base_url:
        backend_kwargs["base_url"] = args.base_url
    logger = RLMLogger(log_dir=args.log_dir)
    rlm = RLM(
        backend=args.backend,
        backend_kwargs=backend_kwargs,
        environment=args.environment,
        max_depth=args.max_depth,
        max_iterations=args.max_iterations,
        max_timeout=args.max_timeout,
        max_tokens=args.max_tokens,
        max_budget=args.max_budget,
        max_errors=args.max_errors,
        logger=logger,
        verbose=args.verbose,
    )
    if not args.verbose and not args.quiet:
        rlm.verbose = Progress(status=True, stream=stderr)  # drawn only if stderr is a terminal
    try:
        result = rlm.completion(context, root_prompt=args.question)
    finally:
        rlm.close()
        if logger.log_file_path:
            print(f"{PROG}: trajectory log: {logger.log_file_path}", file=stderr)
    print(result.response, file=stdout)
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, stdout: TextIO) -> int:
    from rlm_core.demo.make_document import expected_answer
    from rlm_core.demo.run import choose_backend, run_demo

    backend = None if args.backend == "auto" else args.backend
    result = run_demo(out=stdout, backend=backend, model=args.model, environment=args.environment)
    if choose_backend(backend) == "scripted" and result.response.strip() != expected_answer():
        return EXIT_FAILURE
    return EXIT_OK


# -- view -------------------------------------------------------------------------------


def _cmd_view(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from rlm_core.viewer import serve, write_html

    if not args.serve:
        print(write_html(args.logfile, args.output), file=stdout)
        return EXIT_OK
    if args.output:
        print(f"{PROG}: wrote {write_html(args.logfile, args.output)}", file=stderr)
    server = serve(args.logfile, port=args.port)
    print(server.url, file=stdout, flush=True)
    print(
        f"{PROG}: serving {args.logfile} on {server.url} (each page load re-reads the log; "
        "Ctrl+C stops)",
        file=stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rlm`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Recursive Language Models: answer questions about contexts far larger "
        "than a model's window by letting the model explore them in a Python REPL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="answer a question about a context (files or stdin)",
        description="Run an RLM: the context is loaded as `context` in a REPL, the model "
        "explores it with code and sub-LM calls, and the final answer is printed to stdout.",
    )
    run.add_argument("question", help="the question (the root prompt the model sees)")
    run.add_argument(
        "--context",
        nargs="+",
        metavar="FILE",
        help="context file(s): one file gives a string, several a list of strings; "
        "'-' reads standard input (default: standard input)",
    )
    run.add_argument(
        "--backend",
        default="openai",
        help="LM backend name (default: openai; see `rlm backends`). 'scripted' is a "
        "deterministic test stand-in LM, not a model, and needs scripted replies, so it is "
        "not useful from the command line",
    )
    run.add_argument("--model", help="model name (backend_kwargs['model_name'])")
    run.add_argument(
        "--base-url",
        help="API base URL, e.g. an OpenAI-compatible server at http://localhost:8000/v1 "
        "(default: OPENAI_BASE_URL or the provider's API)",
    )
    run.add_argument(
        "--environment",
        default="local",
        help="where code cells run (default: local; see `rlm environments`)",
    )
    run.add_argument(
        "--max-depth",
        type=non_negative_int,
        default=1,
        help="recursion depth: rlm_query spawns child RLMs while depth+1 < max-depth (default: 1)",
    )
    run.add_argument(
        "--max-iterations",
        type=positive_int,
        default=30,
        help="root turns before a final answer is forced (default: 30)",
    )
    run.add_argument("--max-timeout", type=positive_float, help="stop after SECONDS (exit 3)")
    run.add_argument(
        "--max-tokens", type=positive_int, help="stop after this many tokens in total (exit 3)"
    )
    run.add_argument(
        "--max-budget", type=positive_float, help="stop after spending this many USD (exit 3)"
    )
    run.add_argument(
        "--max-errors",
        type=positive_int,
        help="stop after this many iterations in a row with a failing cell (exit 3)",
    )
    run.add_argument("--log-dir", help="write the trajectory as JSON lines into this directory")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument(
        "--verbose",
        action="store_true",
        help="print each iteration's reply, code and output on stdout (on a terminal, above "
        "live status lines)",
    )
    shown.add_argument(
        "--quiet",
        action="store_true",
        help="draw no status lines (by default they are drawn on stderr when it is a terminal)",
    )

    sub.add_parser(
        "environments",
        help="list installed environments",
        description="List the environments (sandboxes for code cells) that are installed.",
    )
    sub.add_parser(
        "backends",
        help="list installed LM backends",
        description="List the LM backends that are installed.",
    )

    demo = sub.add_parser(
        "demo",
        help="run the bundled lighthouse-logbook demo",
        description="Ask an RLM which station in a 460 KB bundle of lighthouse logbooks "
        "recorded the most storms. Uses a real model when OPENAI_API_KEY or OPENAI_BASE_URL "
        "is set; otherwise a scripted stand-in LM (deterministic, not a model) plays the model.",
    )
    demo.add_argument(
        "--model", help="model for a real backend (default: RLM_DEMO_MODEL or gpt-4o-mini)"
    )
    demo.add_argument(
        "--environment", default="local", help="where code cells run (default: local)"
    )
    demo.add_argument(
        "--backend",
        default="auto",
        help="'auto' (default): openai when OPENAI_API_KEY or OPENAI_BASE_URL is set, else "
        "the scripted stand-in LM; or a backend name such as 'openai' or 'scripted'",
    )

    view = sub.add_parser(
        "view",
        help="show a trajectory log as a self-contained HTML page",
        description="Write one self-contained HTML page (no network, no external files) for "
        "a trajectory log written by rlm-core or by rlms 0.1.3: the iteration timeline, each "
        "iteration's response, code and outputs, the tree of sub-calls and child RLMs, and "
        "tokens and cost per model and per depth. With --serve, serve it on 127.0.0.1.",
    )
    view.add_argument("logfile", help="the .jsonl log (e.g. from `rlm run --log-dir DIR`)")
    view.add_argument(
        "-o",
        "--output",
        metavar="OUT.html",
        help="where to write the page (default: the log's path ending .html)",
    )
    view.add_argument(
        "--serve",
        action="store_true",
        help="serve the page on http://127.0.0.1:PORT/ until Ctrl+C (prints the URL on stdout)",
    )
    view.add_argument(
        "--port",
        type=port,
        default=0,
        help="port for --serve (default: 0, a free port chosen by the system)",
    )

    from rlm_core.eval.command import add_parser as add_eval_parser

    add_eval_parser(sub)
    from rlm_core.cli_conformance import add_parser as add_conformance_parser

    add_conformance_parser(sub)
    from rlm_core.cli_cleanup import add_parser as add_cleanup_parser

    add_cleanup_parser(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the ``rlm`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    from rlm_core.cli_conformance import split_pytest_args

    own, pytest_args = split_pytest_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    if pytest_args:
        args.pytest_args = pytest_args
    try:
        if args.command == "run":
            return _cmd_run(args, stdin, stdout, stderr)
        if args.command == "environments":
            return _cmd_environments(args, stdout)
        if args.command == "backends":
            return _cmd_backends(args, stdout)
        if args.command == "view":
            return _cmd_view(args, stdout, stderr)
        if args.command == "eval":
            from rlm_core.eval.command import run_command

            return run_command(args, stdout, stderr)
        if args.command == "cleanup":
            from rlm_core.cli_cleanup import run as run_cleanup

            return run_cleanup(args, stdout)
        if args.command == "conformance":
            from rlm_core.cli_conformance import run as run_conformance

            return run_conformance(args, stderr)
        return _cmd_demo(args, stdout)
    except LimitExceededError as exc:
        _error(str(exc), stderr)
        if exc.partial_answer:
            print(f"{PROG}: partial answer follows on stdout", file=stderr)
            print(exc.partial_answer, file=stdout)
        return EXIT_LIMIT
    except CancellationError as exc:
        _error(str(exc), stderr)
        if exc.partial_answer:
            print(exc.partial_answer, file=stdout)
        return EXIT_INTERRUPTED
    except MissingAPIKeyError as exc:
        hint = " (for a local OpenAI-compatible server, pass --base-url instead)"
        wants_hint = args.command == "run" and not args.base_url
        _error(str(exc) + (hint if wants_hint else ""), stderr)
        return EXIT_USAGE
    except RLMError as exc:
        message = str(exc)
        if args.command == "run" and not args.model and "model_name" in message:
            message += " (pass --model NAME)"
        _error(message, stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted", stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if getattr(args, "verbose", False):
            traceback.print_exc(file=stderr)
        _error(f"unexpected {type(exc).__name__}: {exc}", stderr)
        if not getattr(args, "verbose", False) and args.command == "run":
            print(f"{PROG}: run again with --verbose to see the traceback", file=stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
