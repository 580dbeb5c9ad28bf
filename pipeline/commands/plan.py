"""`editroute plan MANIFEST --policy FILE [--explain] [--monthly-volume N] [--json]`: route every job without
running any, and show the split, the cost per backend, and what all-API or all-self-hosted would cost.

Needs no GPU and no API key: backends are only asked for capabilities and estimates.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.commands import ExitCode

MAX_VOLUME = 5_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="route a manifest under a policy and estimate its cost, running nothing")
    p.add_argument("manifest", type=Path, help="jobs file (.jsonl, .yaml or .json)")
    p.add_argument("--policy", required=True, type=Path, help="policy YAML (see configs/policies/)")
    p.add_argument("--explain", action="store_true", help="print each job's decision and its reasons")
    p.add_argument(
        "--monthly-volume",
        type=int,
        metavar="N",
        help="also project this mix to N jobs a month (budgets and volume shift included)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=run)


def _usd(amount: Decimal) -> str:
    return f"${amount:,.2f}" if amount >= 100 else f"${amount:,.4f}"


def _decision_dict(d, saving: tuple[str, Decimal, Decimal] | None = None) -> dict[str, Any]:
    from pipeline.routing import money

    return {
        "id": d.job_id,
        "backend": d.backend,
        "usd": money(d.estimate.usd) if d.estimate else None,
        "basis": d.estimate.basis if d.estimate else None,
        "quality": d.quality,
        "fallbacks": list(d.fallbacks),
        "reasons": list(d.reasons),
        "alternatives": [
            {
                "backend": a.backend,
                "usd": money(a.estimate.usd) if a.estimate else None,
                "quality": a.quality,
                "excluded": a.excluded,
            }
            for a in d.alternatives
        ],
        **(
            {"batch_saving": {"vs": saving[0], "synchronous_usd": money(saving[1]), "saves_usd": money(saving[2])}}
            if saving
            else {}
        ),
    }


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from pipeline.jobs import Manifest
    from pipeline.routing import build_backends, load_policy, plan_jobs, project

    if args.monthly_volume is not None and not 1 <= args.monthly_volume <= MAX_VOLUME:
        raise ConfigError(f"--monthly-volume={args.monthly_volume}: expected 1 to {MAX_VOLUME}")
    policy = load_policy(args.policy)
    backends = build_backends(policy)
    models = {name: str(getattr(getattr(b, "settings", None), "model", "") or "") for name, b in backends.items()}
    for name, b in backends.items():  # e.g. Firefly on prices.yaml's placeholder rate, not a contract's
        if note := getattr(b, "price_note", None):
            models[name] = f"{models[name]} ({note})".lstrip()
    manifest = Manifest(args.manifest)
    problems = manifest.check()
    summary = plan_jobs(policy, backends, manifest.jobs(), keep_decisions=True)
    projection = None
    if args.monthly_volume and manifest.valid:
        projection = project(policy, backends, manifest.jobs, args.monthly_volume)

    if args.json:
        out = {
            "policy": str(args.policy),
            "manifest": str(args.manifest),
            "entries": manifest.entries,
            "problems": [
                {"line": p.line, "index": p.index, "id": p.job_id, "field": p.field, "message": p.message}
                for p in problems
            ],
            **summary.as_dict(),
            "hosting": {name: spec.hosting for name, spec in policy.backends.items()},
            "models": models,
            "decisions": [_decision_dict(d, summary.lane_savings.get(d.job_id)) for d in summary.decisions],
        }
        out["hosting_share"] = hosting_shares(policy, summary)
        if projection is not None:
            out["projection"] = {
                "monthly_volume": args.monthly_volume,
                **projection.as_dict(),
                "hosting_share": hosting_shares(policy, projection),
            }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _render(args, policy, models, manifest, problems, summary, projection)
    if problems and not manifest.valid:
        return ExitCode.BAD_INPUT
    return ExitCode.JOBS_FAILED if problems or summary.held else ExitCode.OK


def _split_table(title: str, policy, models: dict[str, str], summary):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, just in (
        ("backend", "left"),
        ("model", "left"),
        ("hosting", "left"),
        ("jobs", "right"),
        ("images", "right"),
        ("est. cost", "right"),
        ("per job", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for name, t in summary.split.items():
        per = _usd(t.usd / t.jobs) if t.jobs else "-"
        table.add_row(
            name, models.get(name, ""), policy.backends[name].hosting, str(t.jobs), str(t.images), _usd(t.usd), per
        )
    if summary.held:
        table.add_row("[red]held[/red]", "", "", str(summary.held), "", "", "")
    table.add_section()
    images = sum(t.images for t in summary.split.values())
    table.add_row("total", "", "", str(summary.jobs), str(images), _usd(summary.total_usd), "")
    return table


def hosting_shares(policy, summary) -> dict[str, float]:
    """Share of the planned jobs per hosting (api, self-hosted) and held (routed nowhere: a budget stopped them or
    no backend can run them): how much of a mix stays on, or waits for, the API."""
    jobs = {"api": 0, "self-hosted": 0, "held": summary.held}
    for name, totals in summary.split.items():
        jobs[policy.backends[name].hosting] += totals.jobs
    total = sum(jobs.values())
    return {k: v / total for k, v in jobs.items()} if total else {}


def _share_line(policy, summary) -> str:
    shares = hosting_shares(policy, summary)
    if not shares:
        return ""
    held = f", held {shares['held']:.0%}" if summary.held else ""
    return f"{'on the API':>16}: {shares['api']:.0%} of jobs (self-hosted {shares['self-hosted']:.0%}{held})"


def _comparisons(summary) -> list[str]:
    lines = []
    lane = summary.lanes
    if lane.jobs:
        only = f"; {lane.lane_only} only a lane can run" if lane.lane_only else ""
        lines.append(
            f"{'batch lanes':>16}: {_usd(lane.usd)} for {lane.jobs} job{'s' if lane.jobs != 1 else ''} that can wait, "
            f"{_usd(lane.sync_usd)} "
            f"synchronously: saves {_usd(lane.sync_usd - lane.usd)}{only}"
        )
    for key, label in (("api", "all-API"), ("self-hosted", "all-self-hosted")):
        c = summary.compare[key]
        text = f"{label:>16}: {_usd(c.totals.usd)} for {c.totals.jobs} jobs"
        if c.cannot_run:
            text += f" ({c.cannot_run} job{'s' if c.cannot_run != 1 else ''} cannot run there)"
        lines.append(text)
    return lines


def _render(args, policy, models, manifest, problems, summary, projection) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    err = Console(stderr=True)
    for p in problems:
        err.print(f"[red]problem[/red] {escape(str(p))}")
    if problems:
        err.print(f"{len(problems)} problem(s) in {manifest.entries} entries; {manifest.valid} valid job(s) planned")
    if args.explain:
        for d in summary.decisions:
            head = (
                f"[bold]{escape(d.job_id)}[/bold] -> [green]{escape(d.backend)}[/green] {_usd(d.estimate.usd)}"
                if d.backend and d.estimate
                else f"[bold]{escape(d.job_id)}[/bold] -> [red]held[/red]"
            )
            console.print(head)
            for reason in d.reasons:
                console.print(f"    {escape(reason)}", soft_wrap=True)
        console.print()
    console.print(_split_table(f"Plan: {args.manifest} under {args.policy}", policy, models, summary))
    console.print(f"{'this policy':>16}: {_usd(summary.total_usd)} for {summary.jobs - summary.held} jobs")
    console.print(_share_line(policy, summary))
    for line in _comparisons(summary):
        console.print(line)
    if projection is not None:
        console.print()
        title = f"Projection: {args.monthly_volume:,} jobs/month with this mix"
        console.print(_split_table(title, policy, models, projection))
        console.print(_share_line(policy, projection))
        for line in _comparisons(projection):
            console.print(line)
