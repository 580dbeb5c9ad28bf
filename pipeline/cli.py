"""`editroute` command line: one subcommand per module in `pipeline/commands/`.

Each command module has `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy things (torch, FastAPI, Ray) inside `func`, so `editroute --help` is instant.
One handler turns editroute errors into exit codes (`pipeline.commands.ExitCode`: 0 ok, 1 some jobs failed,
2 bad input or config, 130 interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from backends.errors import EditError
from pipeline.commands import EXIT_CODES_TEXT, ExitCode
from pipeline.errors import ConfigError

COMMANDS = ["edit", "plan", "policy", "run", "report", "batch", "review", "demo", "serve", "bench", "eval", "doctor"]
DESCRIPTION = (
    "Route image-edit jobs between hosted edit APIs (OpenAI, also through its half-price Batch API; Gemini; "
    "Firefly) and self-hosted diffusion (SDXL, Qwen-Image-Edit, FLUX.2 klein) under a YAML cost/quality policy; "
    "every job, attempt and dollar goes into a SQLite ledger."
)


def _version() -> str:
    try:
        return version("editroute")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; each option's default added where its help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS, []):
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every editroute parser and subparser shows defaults (`HelpFormatter`)."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="editroute",
        description=DESCRIPTION,
        epilog=f"{EXIT_CODES_TEXT}\n`editroute` alone prints this help (exit 2).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"editroute {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(sub)
    return parser


# A reader that closed the pipe (`editroute report DIR | head`): exit as a shell reports a process killed by
# SIGPIPE. (SIGPIPE itself stays ignored, as Python sets it: a default handler would kill `serve` and the HTTP
# clients on any reset socket.)
PIPE_CLOSED = 141


def quiet_model_libraries() -> None:
    """transformers' and diffusers' own warnings (hub look-ups we report ourselves, torchvision and deprecation
    notices) are noise on the command line; set before they are imported, so `-v` keeps them."""
    import warnings

    for lib in ("TRANSFORMERS", "DIFFUSERS"):
        os.environ.setdefault(f"{lib}_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", module="(transformers|diffusers|torchvision)")


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here (also after --help), not as a traceback at exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write, not even at exit
        return PIPE_CLOSED
    except SystemExit as exc:  # rich's answer to a closed pipe: stdout moved to /dev/null, then exit 1
        if exc.code == 1 and _stdout_is_devnull():
            return PIPE_CLOSED
        raise


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured, closed)
        return False
    return (out.st_dev, out.st_ino) == (null.st_dev, null.st_ino)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a newcomer typing `editroute`: the whole help, not one usage line
        parser.print_help()
        return ExitCode.BAD_INPUT
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        quiet_model_libraries()
    try:
        return int(args.func(args) or 0)
    except (ConfigError, EditError) as exc:
        print(f"editroute {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print(f"editroute {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
