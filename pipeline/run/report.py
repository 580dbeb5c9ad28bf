"""The batch report, from the ledger alone: jobs per backend, failures by reason, spend versus the plan's
estimate, call latency p50/p95 per backend, per model what its paid calls were estimated at versus what they
were billed (the measured estimate/bill ratio: how far a model's token estimates, some labelled ESTIMATE, are off),
once people reviewed the outputs (`editroute review`) the cost per accepted edit, and the batches of batch lanes
with their status and what their lines were billed. As a dict (`build_report`),
rich tables, JSON or CSV.

`spend_usd` is what settled calls cost; `held_usd` is budget still held by calls not settled (a run in progress,
or one that was killed and not yet followed by another run); `unknown_outcome` counts the calls that went out and
never answered (in flight when a run died, or a lost answer): possible charges, up to their holds. Budgets count
all three."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from decimal import Decimal
from typing import Any

from pipeline.ledger import Ledger, fmt_usd, from_nusd

_JOB_PREFIX = re.compile(r"^job '[^']*'(, backend '[^']*')?: ")
CSV_COLUMNS = (
    "backend",
    "jobs_done",
    "jobs_failed",
    "calls",
    "spend_usd",
    "held_usd",
    "estimate_usd",
    "unknown_calls",
    "unknown_usd",
    "p50_s",
    "p95_s",
    "accepted",
    "judged",
    "cost_per_accepted_usd",
)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def build_report(ledger: Ledger) -> dict[str, Any]:
    conn = ledger._conn()
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "jobs_done": 0,
            "jobs_failed": 0,
            "calls": 0,
            "spend_nusd": 0,
            "held_nusd": 0,
            "estimate_nusd": 0,
            "unknown_calls": 0,
            "unknown_nusd": 0,
            "latencies": [],
        }
    )
    status_counts = ledger.counts()
    # a job that failed before any call (its backend skipped as misconfigured) counts where it was routed
    for backend, status, n in conn.execute(
        "SELECT COALESCE(backend, planned_backend) AS b, status, COUNT(*) FROM jobs WHERE b IS NOT NULL "
        "GROUP BY b, status"
    ):
        if status == "done":
            per[backend]["jobs_done"] += n
        elif status == "failed":
            per[backend]["jobs_failed"] += n
    for backend, est in conn.execute(
        "SELECT planned_backend, SUM(estimate_nusd) FROM jobs WHERE planned_backend "
        "IS NOT NULL AND status IN ('done','failed') GROUP BY planned_backend"
    ):
        per[backend]["estimate_nusd"] += est or 0
    for backend, state, cost, reserved, start, end, call_ms, error_class, outcome in conn.execute(
        "SELECT backend, state, cost_nusd, reserved_nusd, started_at, ended_at, call_ms, error_class, outcome "
        "FROM attempts"
    ):
        row = per[backend]
        row["calls"] += state != "released"
        if state == "reserved" and outcome == "unknown":  # sent, never answered: a possible charge
            row["unknown_calls"] += 1
            row["unknown_nusd"] += reserved
        elif state == "reserved":  # a call under way, or left by a run that stopped: held, not (yet) billed
            row["held_nusd"] += reserved
        else:
            row["spend_nusd"] += cost
        if state == "settled" and error_class is None and end is not None:
            row["latencies"].append((call_ms if call_ms is not None else end - start) / 1000)
    failures: dict[str, dict[str, Any]] = {}
    for job_id, error_class, error in conn.execute(
        "SELECT id, error_class, error FROM jobs WHERE status='failed' ORDER BY id"
    ):
        reason = error_class or "Error"
        entry = failures.setdefault(reason, {"reason": reason, "count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < 3:
            entry["examples"].append({"job": job_id, "error": _JOB_PREFIX.sub("", error or "")})
    models = []
    for model, calls, est, billed in conn.execute(
        "SELECT model, COUNT(*), SUM(reserved_nusd), SUM(cost_nusd) FROM attempts WHERE state='settled' "
        "AND error_class IS NULL AND model IS NOT NULL GROUP BY model ORDER BY model"
    ):
        models.append(
            {
                "model": model,
                "calls": calls,
                "estimate_usd": _usd(from_nusd(est)),
                "billed_usd": _usd(from_nusd(billed)),
                "estimate_to_bill": round(est / billed, 3) if billed else None,
            }
        )
    reviewed = {r["backend"]: r for r in ledger.review_totals() if r["judged"]}
    backends = []
    for name in sorted(per):
        row = per[name]
        lat = row.pop("latencies")
        rev = reviewed.get(name)
        backends.append(
            {
                "backend": name,
                "jobs_done": row["jobs_done"],
                "jobs_failed": row["jobs_failed"],
                "calls": row["calls"],
                "spend_usd": _usd(from_nusd(row["spend_nusd"])),
                "held_usd": _usd(from_nusd(row["held_nusd"])),
                "estimate_usd": _usd(from_nusd(row["estimate_nusd"])),
                "unknown_calls": row["unknown_calls"],
                "unknown_usd": _usd(from_nusd(row["unknown_nusd"])),
                "p50_s": _round(percentile(lat, 50)),
                "p95_s": _round(percentile(lat, 95)),
                # from `editroute review`: what the judged jobs cost / how many were accepted (None: not reviewed)
                "accepted": rev["accepted"] if rev else None,
                "judged": rev["judged"] if rev else None,
                "cost_per_accepted_usd": _per_accepted(rev),
            }
        )
    total_spend = sum((Decimal(b["spend_usd"]) for b in backends), Decimal(0))
    total_est = sum((Decimal(b["estimate_usd"]) for b in backends), Decimal(0))
    total_held = sum((Decimal(b["held_usd"]) for b in backends), Decimal(0))
    accepted = sum(r["accepted"] for r in reviewed.values())
    judged_cost = sum((r["judged_cost_usd"] for r in reviewed.values()), Decimal(0))
    total_unknown = sum((Decimal(b["unknown_usd"]) for b in backends), Decimal(0))
    return {
        "ledger": str(ledger.path),
        "jobs": {
            "total": sum(status_counts.values()),
            **{s: status_counts.get(s, 0) for s in ("done", "failed", "running", "interrupted", "queued")},
        },
        "spend_usd": _usd(total_spend),
        "held_usd": _usd(total_held),
        "unknown_outcome": {"calls": sum(b["unknown_calls"] for b in backends), "up_to_usd": _usd(total_unknown)},
        "estimate_usd": _usd(total_est),
        "backends": backends,
        "models": models,
        "review": {
            "judged": sum(r["judged"] for r in reviewed.values()),
            "accepted": accepted,
            "cost_per_accepted_usd": _usd(judged_cost / accepted) if accepted else None,
        },
        "failures": sorted(failures.values(), key=lambda f: -f["count"]),
        "batches": ledger.batch_summaries(),  # OpenAI Batch API batches of batch lanes (docs/batch-lane.md)
    }


def _per_accepted(reviewed: dict[str, Any] | None) -> str | None:
    """Cost per accepted edit: every call of the jobs people judged (rejected ones and their re-runs included),
    over the edits they accepted. None before anything was judged; "inf" when nothing judged was accepted."""
    if not reviewed:
        return None
    if not reviewed["accepted"]:
        return "inf"
    return _usd(reviewed["judged_cost_usd"] / reviewed["accepted"])


def _usd(value: Decimal) -> str:
    """Exact, in plain notation (no 2E-7)."""
    return f"{value.normalize():f}" if value else "0"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["backends"]:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def render(report: dict[str, Any], console) -> None:
    """Rich tables for a person."""
    from rich.table import Table

    jobs = report["jobs"]
    console.print(
        f"[bold]{jobs['total']} jobs[/]: [green]{jobs['done']} done[/], [red]{jobs['failed']} failed[/]"
        + (f", {jobs['interrupted']} interrupted" if jobs["interrupted"] else "")
        + (f", {jobs['running']} running" if jobs["running"] else "")
        + f"; spend {fmt_usd(Decimal(report['spend_usd']))} (plan estimate "
        f"{fmt_usd(Decimal(report['estimate_usd']))})"
        + (
            f"; {fmt_usd(Decimal(report['held_usd']))} held by calls not settled (a run in progress, or "
            "one that stopped: the next run settles them)"
            if Decimal(report["held_usd"])
            else ""
        ),
        highlight=False,
    )
    table = Table(title="per backend", title_justify="left")
    for col in ("backend", "done", "failed", "calls", "spend", "plan estimate", "p50", "p95"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for b in report["backends"]:
        table.add_row(
            b["backend"],
            str(b["jobs_done"]),
            str(b["jobs_failed"]),
            str(b["calls"]),
            fmt_usd(Decimal(b["spend_usd"])),
            fmt_usd(Decimal(b["estimate_usd"])),
            _secs(b["p50_s"]),
            _secs(b["p95_s"]),
        )
    console.print(table)
    unknown = report.get("unknown_outcome") or {}
    if unknown.get("calls"):
        console.print(
            f"[yellow]unknown outcome: {unknown['calls']} call(s), up to {fmt_usd(Decimal(unknown['up_to_usd']))}[/] "
            "(sent, never answered: possibly billed; counted against budgets until resolved or the policy's "
            "unknown_outcome_hold passes; see docs/crash-safety.md)",
            highlight=False,
        )
    if report.get("models"):
        est = Table(title="estimate vs bill per model (paid calls; ratio > 1: estimated high)", title_justify="left")
        for col in ("model", "calls", "estimated", "billed", "estimate/bill"):
            est.add_column(col, justify="left" if col == "model" else "right")
        for m in report["models"]:
            ratio = "-" if m["estimate_to_bill"] is None else f"{m['estimate_to_bill']:.3f}"
            est.add_row(
                m["model"],
                str(m["calls"]),
                fmt_usd(Decimal(m["estimate_usd"])),
                fmt_usd(Decimal(m["billed_usd"])),
                ratio,
            )
        console.print(est)
    review = report["review"]
    if review["judged"]:
        judged = Table(title="reviewed by people (editroute review)", title_justify="left")
        for col in ("backend", "accepted", "acceptance", "cost per accepted edit"):
            judged.add_column(col, justify="left" if col == "backend" else "right")
        for b in report["backends"]:
            if b["judged"]:
                judged.add_row(
                    b["backend"],
                    f"{b['accepted']}/{b['judged']}",
                    f"{b['accepted'] / b['judged']:.0%}",
                    _per_accepted_text(b["cost_per_accepted_usd"]),
                )
        console.print(judged)
        console.print(
            f"{review['accepted']} of {review['judged']} judged edits accepted; cost per accepted edit "
            f"{_per_accepted_text(review['cost_per_accepted_usd'])}: what the judged jobs cost (rejects and re-runs "
            "included) over the edits accepted",
            highlight=False,
        )
    if report.get("batches"):
        from pipeline.run.batch_report import batch_table

        console.print(batch_table(report["batches"]))
    if report["failures"]:
        fails = Table(title="failures by reason", title_justify="left")
        fails.add_column("reason")
        fails.add_column("jobs", justify="right")
        fails.add_column("example")
        for f in report["failures"]:
            ex = f["examples"][0]
            fails.add_row(f["reason"], str(f["count"]), f"{ex['job']}: {ex['error'][:160]}")
        console.print(fails)


def _per_accepted_text(value: str | None) -> str:
    if value is None:
        return "-"
    return "none accepted" if value == "inf" else fmt_usd(Decimal(value))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
