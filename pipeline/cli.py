"""`editroute` command line: one subcommand per module in `pipeline/commands/`.

Each command module has `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Command modules import heavy things (torch, FastAPI, Ray) inside `func`, so `editroute --help` is instant.
One handler turns editroute errors into exit codes: 0 ok, 1 some jobs failed, 2 bad input or config,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from backends.errors import EditError
from pipeline.errors import ConfigError

COMMANDS = ["edit", "plan", "policy", "run", "report", "review", "demo", "serve", "bench", "eval", "doctor"]
DESCRIPTION = (
    "Route image-edit jobs between OpenAI's image edit API and self-hosted SDXL inpainting under a YAML "
    "cost/quality policy; every job, attempt and dollar goes into a SQLite ledger."
)


def _version() -> str:
    try:
        return version("editroute")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="editroute", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"editroute {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, EditError) as exc:
        print(f"editroute {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"editroute {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
