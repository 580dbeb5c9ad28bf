"""`editroute report DIR [--json|--csv]`: the batch report again, from the ledger alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="jobs, failures, spend and latency of a run folder, from its ledger")
    p.add_argument("dir", help="the --out folder of `editroute run` (or a path to its editroute.db)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print the per-backend table as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.ledger import DB_NAME, Ledger
    from pipeline.run import build_report, render, to_csv, to_json

    path = Path(args.dir)
    db = path if path.is_file() else path / DB_NAME
    if not db.is_file():
        raise ConfigError(f"{args.dir}: no ledger here (expected {db}); pass the --out folder of `editroute run`")
    with Ledger(db) as ledger:
        report = build_report(ledger)
    if args.json:
        print(to_json(report))
    elif args.csv:
        print(to_csv(report), end="")
    else:
        render(report, Console())
    return 0
