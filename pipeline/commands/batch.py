"""`editroute batch status|cancel DIR`: the OpenAI batches of a run folder's batch lanes (docs/batch-lane.md)."""

from __future__ import annotations

import argparse
import json

from pipeline.commands import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="status or cancel of a run folder's OpenAI batches (batch lanes)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="the folder's batches, their status and what they were billed")
    status.add_argument("dir", help="the --out folder of `editroute run`")
    status.add_argument("--offline", action="store_true", help="from the ledger only (do not ask the API)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=run_status)
    cancel = verbs.add_parser(
        "cancel",
        help="cancel running batches upstream and record what they finished",
        epilog="Finished lines are billed all the same: the next `editroute run` of the manifest writes their\n"
        "outputs (nothing is paid twice) and sends the lines that never ran again.",
    )
    cancel.add_argument("dir", help="the --out folder of `editroute run`")
    cancel.add_argument("--batch", metavar="ID", help="only this batch (default: every running batch of the folder)")
    cancel.add_argument("--wait", type=float, default=600.0, metavar="S", help="wait this long for batches to stop")
    cancel.set_defaults(func=run_cancel)


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.run import batch_table, open_existing_ledger, refresh_batches

    with open_existing_ledger(args.dir) as ledger:
        notes = [] if args.offline else refresh_batches(ledger)
        batches = ledger.batch_summaries()
    if args.json:
        print(json.dumps({"batches": batches, "notes": notes}, indent=2))
        return ExitCode.OK
    console = Console()
    if not batches:
        console.print(f"{args.dir}: no batches (no job of this folder went to a batch lane)", highlight=False)
    else:
        console.print(batch_table(batches))
    for note in notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    return ExitCode.OK


def run_cancel(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.run import cancel_batches, open_existing_ledger

    with open_existing_ledger(args.dir) as ledger:
        lines = cancel_batches(ledger, args.dir, batch_id=args.batch, wait_s=args.wait)
    console = Console()
    for line in lines:
        console.print(line, highlight=False)
    return ExitCode.OK
