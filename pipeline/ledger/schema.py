"""The ledger's schema, its migrations, money in integer nano-dollars, and the records it hands out.

See `store.py` for the tables; a new schema version is a new entry at the end of `MIGRATIONS`
(applied in order under `BEGIN IMMEDIATE` by `migrate`; `PRAGMA user_version` says which ran).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Literal

from pipeline.routing import Period

DB_NAME = "editroute.db"
NANO = Decimal("1e9")
JobStatus = Literal["queued", "running", "done", "failed", "interrupted"]

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE jobs(
      id TEXT PRIMARY KEY,
      idempotency_key TEXT NOT NULL UNIQUE,
      request_hash TEXT NOT NULL,
      status TEXT NOT NULL CHECK(status IN ('queued','running','done','failed','interrupted')),
      backend TEXT, planned_backend TEXT, estimate_nusd INTEGER,
      attempts INTEGER NOT NULL DEFAULT 0, starts INTEGER NOT NULL DEFAULT 0, crashes INTEGER NOT NULL DEFAULT 0,
      owner TEXT, outputs TEXT, cost_nusd INTEGER NOT NULL DEFAULT 0, error_class TEXT, error TEXT,
      created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER);
    CREATE INDEX jobs_status ON jobs(status);
    CREATE TABLE attempts(
      id INTEGER PRIMARY KEY,
      job_id TEXT NOT NULL, backend TEXT NOT NULL,
      state TEXT NOT NULL CHECK(state IN ('reserved','settled','released')),
      reserved_nusd INTEGER NOT NULL, cost_nusd INTEGER NOT NULL DEFAULT 0,
      day TEXT NOT NULL, month TEXT NOT NULL,
      started_at INTEGER NOT NULL, ended_at INTEGER,
      error_class TEXT, error TEXT, usage TEXT, owner TEXT);
    CREATE INDEX attempts_month ON attempts(month, backend);
    CREATE INDEX attempts_day ON attempts(day, backend);
    CREATE INDEX attempts_job ON attempts(job_id);
    CREATE VIEW reservations AS
      SELECT id, job_id, backend, reserved_nusd, day, month, started_at, owner FROM attempts WHERE state='reserved';
    CREATE VIEW spend_daily AS
      SELECT backend, day, SUM(CASE state WHEN 'reserved' THEN reserved_nusd ELSE cost_nusd END) AS nusd,
             COUNT(*) AS calls FROM attempts GROUP BY backend, day;
    CREATE VIEW spend_monthly AS
      SELECT backend, month, SUM(CASE state WHEN 'reserved' THEN reserved_nusd ELSE cost_nusd END) AS nusd,
             COUNT(*) AS calls FROM attempts GROUP BY backend, month;
    """,
    # v2: the backend's own call time (queueing in the executor excluded), for latency percentiles
    """
    ALTER TABLE attempts ADD COLUMN call_ms INTEGER;
    """,
    # v3: the model a settled call ran on, so `report` can set each model's estimates against its bills
    """
    ALTER TABLE attempts ADD COLUMN model TEXT;
    """,
    # v4: people's review decisions (every one kept) and the review page's index of the run (reviews.py)
    """
    CREATE TABLE reviews(
      id INTEGER PRIMARY KEY,
      job_id TEXT NOT NULL, reviewer TEXT NOT NULL,
      decision TEXT NOT NULL CHECK(decision IN ('accept','reject','skip')),
      note TEXT, backend TEXT, tier TEXT, output_sha256 TEXT,
      at INTEGER NOT NULL);
    CREATE INDEX reviews_job ON reviews(job_id, id);
    CREATE TABLE review_items(
      seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL UNIQUE,
      status TEXT, backend TEXT, tier TEXT, cost_nusd INTEGER, latency_ms INTEGER,
      prompt TEXT, tags TEXT, image_path TEXT, mask_path TEXT, output_path TEXT, output_sha256 TEXT, error TEXT,
      job_updated_at INTEGER, decision TEXT, decided_at INTEGER);
    CREATE INDEX review_items_backend ON review_items(backend, seq);
    CREATE INDEX review_items_status ON review_items(status, seq);
    CREATE INDEX review_items_tier ON review_items(tier, seq);
    CREATE INDEX review_items_decision ON review_items(decision, seq);
    CREATE INDEX review_items_spend ON review_items(backend, status, cost_nusd);
    CREATE INDEX review_items_decided ON review_items(decision, backend, cost_nusd);
    CREATE TABLE review_tags(seq INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(seq, tag)) WITHOUT ROWID;
    CREATE INDEX review_tags_tag ON review_tags(tag, seq);
    """,
    # v5 (crash truth): when each call went out (a call that never started cannot have been billed and is no
    # crash), whether it went to a hosted service (which bills what it generated even if we never saw it), and
    # calls of unknown outcome kept as possible charges: state stays 'reserved' (budgets count the hold) with
    # outcome='unknown' until resolved or `hold_until` (unix ms; NULL: as long as its day and month last)
    """
    ALTER TABLE attempts ADD COLUMN call_started_at INTEGER;
    ALTER TABLE attempts ADD COLUMN hosted INTEGER;
    ALTER TABLE attempts ADD COLUMN outcome TEXT;
    ALTER TABLE attempts ADD COLUMN hold_until INTEGER;
    CREATE INDEX attempts_open ON attempts(job_id) WHERE state='reserved';
    """,
    # v6 (batch lane, batches.py): every Files API upload (reused by content), every batch (recorded before its
    # create call goes out, with the local key its metadata carries, and again after), and each of its lines
    # (custom_id -> job, idempotency key and budget hold; where its answer is in the downloaded files)
    """
    CREATE TABLE batch_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE batch_uploads(
      id INTEGER PRIMARY KEY, backend TEXT NOT NULL, sha256 TEXT NOT NULL, purpose TEXT NOT NULL,
      file_id TEXT NOT NULL, bytes INTEGER NOT NULL, filename TEXT, created_at INTEGER NOT NULL);
    CREATE INDEX batch_uploads_sha ON batch_uploads(backend, sha256, purpose);
    CREATE TABLE batches(
      id INTEGER PRIMARY KEY, backend TEXT NOT NULL, local_key TEXT NOT NULL UNIQUE, batch_id TEXT,
      input_file_id TEXT NOT NULL, status TEXT NOT NULL, lines INTEGER NOT NULL,
      completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
      output_file_id TEXT, error_file_id TEXT, folder TEXT, connection TEXT, requeue_of INTEGER, error TEXT,
      created_at INTEGER NOT NULL, submitted_at INTEGER, finished_at INTEGER, collected_at INTEGER,
      cleaned_at INTEGER, updated_at INTEGER NOT NULL);
    CREATE INDEX batches_open ON batches(backend) WHERE collected_at IS NULL;
    CREATE TABLE batch_lines(
      batch INTEGER NOT NULL, custom_id TEXT NOT NULL, job_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
      attempt_id INTEGER NOT NULL, deadline_at INTEGER,
      state TEXT NOT NULL CHECK(state IN ('submitted','completed','failed','expired','cancelled','requeued')),
      in_offset INTEGER NOT NULL, in_length INTEGER NOT NULL, out_offset INTEGER, out_length INTEGER, error TEXT,
      cost_nusd INTEGER, PRIMARY KEY(batch, custom_id));
    CREATE INDEX batch_lines_job ON batch_lines(job_id, idempotency_key);
    CREATE INDEX batch_lines_attempt ON batch_lines(attempt_id);
    """,
]

# What an attempt counts for: an open hold counts its reservation, anything else what was actually billed.
HELD = "CASE state WHEN 'reserved' THEN reserved_nusd ELSE cost_nusd END"


def to_nusd(usd: Decimal | int | str, *, round_up: bool = False) -> int:
    value = Decimal(str(usd)) * NANO
    return int(value.to_integral_value(rounding=ROUND_CEILING) if round_up else value.to_integral_value())


def from_nusd(nusd: int | None) -> Decimal:
    return Decimal(nusd).scaleb(-9) if nusd else Decimal(0)


def fmt_usd(usd: Decimal) -> str:
    """Dollars for people: cents and up to 4 decimals ($0.02, $1.5284), two significant digits below a cent
    ($0.000077). Ledger sums stay exact; this is display only."""
    d = Decimal(usd)
    if d == 0:
        return "$0.00"
    step = Decimal("0.0001") if abs(d) >= Decimal("0.01") else Decimal(1).scaleb(d.adjusted() - 1)
    text = f"{d.quantize(step).normalize():f}"
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class BudgetCap:
    """A limit the ledger enforces at reservation time: on `backend` (None: all backends) per period."""

    backend: str | None
    period: Period
    usd: Decimal | None = None
    jobs: int | None = None

    def describe(self) -> str:
        what = f"backend {self.backend!r}" if self.backend else "all backends"
        limit = " and ".join(
            x
            for x in (
                fmt_usd(self.usd) if self.usd is not None else "",
                f"{self.jobs} jobs" if self.jobs is not None else "",
            )
            if x
        )
        return f"{limit} per {self.period} on {what}"


@dataclass(frozen=True)
class JobRecord:
    id: str
    idempotency_key: str
    request_hash: str
    status: JobStatus
    backend: str | None
    planned_backend: str | None
    estimate: Decimal | None
    attempts: int
    starts: int
    crashes: int
    owner: str | None
    outputs: tuple[dict[str, str], ...]
    cost: Decimal
    error_class: str | None
    error: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        d = dict(row)
        return cls(
            id=d["id"],
            idempotency_key=d["idempotency_key"],
            request_hash=d["request_hash"],
            status=d["status"],
            backend=d["backend"],
            planned_backend=d["planned_backend"],
            estimate=None if d["estimate_nusd"] is None else from_nusd(d["estimate_nusd"]),
            attempts=d["attempts"],
            starts=d["starts"],
            crashes=d["crashes"],
            owner=d["owner"],
            outputs=tuple(json.loads(d["outputs"])) if d["outputs"] else (),
            cost=from_nusd(d["cost_nusd"]),
            error_class=d["error_class"],
            error=d["error"],
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
        )


@dataclass(frozen=True)
class OrphanHolds:
    """What `recover_orphans` did with the open holds of runs that died (and with expired possible charges)."""

    released: int = 0  # never sent, or a self-hosted call: nobody bills it, dropped at $0
    possible_charges: int = 0  # a hosted call in flight when its run died: kept, counted against budgets
    expired: int = 0  # possible charges older than the policy's `unknown_outcome_hold`: dropped

    @property
    def total(self) -> int:
        return self.released + self.possible_charges + self.expired

    def describe(self) -> str:
        parts = []
        if self.released:
            parts.append(f"released {self.released} budget hold(s) of calls a stopped run never made")
        if self.possible_charges:
            parts.append(
                f"kept {self.possible_charges} call(s) a stopped run had in flight as possible charges "
                "(outcome unknown: counted against budgets)"
            )
        if self.expired:
            parts.append(f"dropped {self.expired} possible charge(s) older than unknown_outcome_hold")
        return "; ".join(parts)


ClaimAction = Literal["run", "done", "failed", "busy", "duplicate"]


@dataclass(frozen=True)
class Claim:
    """What `Ledger.claim` decided. `run`: this process now owns the job (status running). `done`: finished
    before (verify its outputs). `failed`: failed before and not retried. `busy`: another live process (or this
    one) is running it. `duplicate`: the same inputs were already submitted as job `record.id`."""

    action: ClaimAction
    record: JobRecord
    recovered: bool = False  # the job was left running by a crashed process and is being retried


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to date (inside the caller's write transaction)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"{path}: ledger schema v{version} is newer than this editroute "
            f"(knows v{len(MIGRATIONS)}); upgrade editroute"
        )
    for v in range(version, len(MIGRATIONS)):
        for statement in MIGRATIONS[v].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={v + 1}")
