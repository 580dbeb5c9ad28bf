"""`editroute report DIR [--json|--csv]`: the batch report again, from the ledger alone."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="jobs, failures, spend and latency of a run folder, from its ledger")
    p.add_argument("dir", help="the --out folder of `editroute run` (or a path to its editroute.db)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print the per-backend table as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.run import build_report, open_existing_ledger, render, to_csv, to_json

    with open_existing_ledger(args.dir) as ledger:
        report = build_report(ledger)
    if args.json:
        print(to_json(report))
    elif args.csv:
        print(to_csv(report), end="")
    else:
        render(report, Console())
    return 0
