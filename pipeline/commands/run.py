"""`editroute run MANIFEST --policy FILE --out DIR`: the main job (see pipeline/run/runner.py)."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.commands import EXIT_CODES_TEXT, ExitCode
from pipeline.run import EXECUTORS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a manifest of edit jobs under a policy (resumable)",
        epilog="Concurrency is set per backend in the policy: concurrency: and requests_per_minute: for the API,\n"
        "max_batch: for SDXL (jobs of equal size and tier per pipeline call; default 4 on CUDA, 1 on CPU).\n"
        "Rerun the same command to resume: done jobs are skipped and never billed again; a job cut off by a\n"
        "crash is retried once. Ctrl-C: in-flight calls finish, queued jobs are marked interrupted (rerun\n"
        "resumes them); Ctrl-C again abandons the calls in flight.\n" + EXIT_CODES_TEXT,
    )
    p.add_argument("manifest", help="JSONL / YAML / JSON manifest of jobs")
    p.add_argument("--policy", required=True, help="routing policy YAML (see configs/policies/)")
    p.add_argument("--out", required=True, help="output folder: DIR/<job id>/..., ledger DIR/editroute.db")
    p.add_argument("--retry-failed", action="store_true", help="also retry jobs that failed in an earlier run")
    p.add_argument("--executor", default="local", help=f"where calls run: {', '.join(EXECUTORS)} (default local)")
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --executor ray: cluster to join (auto, HOST:6379); default $RAY_ADDRESS or a local Ray",
    )
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="take only the first N valid jobs")
    p.add_argument("--json", action="store_true", help="print the final report as JSON (no progress bar)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.run import NotesOnly, RichProgress, build_report, render, run_batch, to_json

    err = Console(stderr=True)
    progress = NotesOnly() if args.json else RichProgress(err)
    try:
        result = run_batch(
            args.manifest,
            args.policy,
            args.out,
            executor=args.executor,
            retry_failed=args.retry_failed,
            max_jobs=args.max_jobs,
            progress=progress,
            executor_options={"ray_address": args.ray_address} if args.ray_address else None,
        )
    except KeyboardInterrupt:
        # second Ctrl-C: in-flight calls were abandoned and marked interrupted; their threads are not waited for
        err.print("editroute run: abandoned in-flight jobs (marked interrupted; rerun to resume them)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ExitCode.INTERRUPTED)
    from pipeline.ledger import Ledger

    with Ledger(result.ledger_path) as ledger:
        report = build_report(ledger)
    report["this_run"] = result.tally.as_dict() | {
        "manifest_problems": len(result.problems),
        "interrupted": result.interrupted,
    }
    if result.stand_ins:
        report["stand_ins"] = result.stand_ins
    if args.json:
        print(to_json(report))
    else:
        t = result.tally
        out = Console()
        out.print(
            f"this run: {t.done} done, {t.reused} already done (skipped, not billed), {t.failed} failed, "
            f"{t.skipped} skipped (failed before; --retry-failed retries them), {t.interrupted} interrupted, "
            f"{len(result.problems)} manifest problem(s)",
            highlight=False,
        )
        render(report, out)
        out.print(f"outputs: {result.out_dir}/<job id>/   ledger: {result.ledger_path}", highlight=False)
        for name, what in result.stand_ins.items():
            out.print(f"STAND-IN: backend {name!r} is a {what}", style="yellow", highlight=False)
    if result.interrupted:
        return ExitCode.INTERRUPTED
    if result.problems and not result.jobs:
        err.print(f"editroute run: no job in the manifest can run ({len(result.problems)} problem(s) above)")
        return ExitCode.BAD_INPUT
    return ExitCode.OK if result.ok else ExitCode.JOBS_FAILED
