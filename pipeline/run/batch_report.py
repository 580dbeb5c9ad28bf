"""Batches for people: the table `editroute report` and `editroute batch status` print (from
`Ledger.batch_summaries()`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.ledger import fmt_usd


def batch_table(batches: list[dict[str, Any]], title: str = "batches (OpenAI Batch API)"):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("backend", "batch", "status", "lines", "answered", "failed", "sent again", "charged", "created"):
        table.add_column(
            col, justify="right" if col in ("lines", "answered", "failed", "sent again", "charged") else "left"
        )
    for b in batches:
        states = b.get("line_states") or {}
        table.add_row(
            b["backend"],
            b["batch_id"] or "(not created)",
            b["status"],
            str(b["lines"]),
            str(states.get("completed", b["completed"])),
            str(states.get("failed", 0) + states.get("expired", 0) + states.get("cancelled", 0) or b["failed"]),
            str(b.get("requeued", 0)),
            fmt_usd(Decimal(b["charged_usd"])),
            datetime.fromtimestamp(b["created_at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
        )
    return table
