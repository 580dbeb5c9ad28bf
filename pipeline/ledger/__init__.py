"""The ledger: one SQLite file per output folder recording jobs, attempts (each a budget hold until settled)
and spend, with its schema and migrations; the exactly-once claim of a job and crash recovery live here.

`Ledger` (store.py) is the entry point; schema.py holds the migrations, records and nano-dollar money helpers;
lifecycle.py a job's claim, crash recovery and how it ends; spend.py what the router reads (spend per period) and
how calls hold and settle money; reviews.py people's accept/reject decisions on outputs and the review page's index
of a run; batches.py the batch lanes' uploads, batches and lines. Below it: routing (the spend periods) and
`backends.errors`."""

from pipeline.ledger.batches import FINAL_STATUSES, BatchLine, BatchRow, LineSpec, LineUpdate
from pipeline.ledger.reviews import DECISIONS, UNDECIDED, Review, ReviewFilter
from pipeline.ledger.schema import (
    DB_NAME,
    MIGRATIONS,
    NANO,
    BudgetCap,
    Claim,
    ClaimAction,
    JobRecord,
    JobStatus,
    OrphanHolds,
    fmt_usd,
    from_nusd,
    now_ms,
    to_nusd,
)
from pipeline.ledger.store import Ledger

__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "NANO",
    "BatchLine",
    "BatchRow",
    "BudgetCap",
    "Claim",
    "ClaimAction",
    "DECISIONS",
    "FINAL_STATUSES",
    "JobRecord",
    "JobStatus",
    "LineSpec",
    "LineUpdate",
    "Ledger",
    "OrphanHolds",
    "Review",
    "ReviewFilter",
    "UNDECIDED",
    "fmt_usd",
    "from_nusd",
    "now_ms",
    "to_nusd",
]
