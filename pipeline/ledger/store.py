"""The SQLite ledger: jobs, attempts (each a budget hold until settled), spend; idempotency and crash recovery.

One file (default `DIR/editroute.db`), stdlib `sqlite3`, WAL, `synchronous=NORMAL`, a busy timeout, and
`BEGIN IMMEDIATE` for every write transaction, so several threads or processes on one host can share it.
Only the driver process writes it (workers on other machines return results; they never open the file).

Schema (version in `PRAGMA user_version`, upgraded by `MIGRATIONS` under `BEGIN IMMEDIATE`):

    jobs      id PK, idempotency_key UNIQUE, request_hash, status queued|running|done|failed|interrupted,
              backend, planned_backend, estimate_nusd, attempts (backend calls), starts, crashes, owner,
              outputs (JSON [{path, sha256}], paths relative to the output folder), cost_nusd,
              error_class, error, created_at/updated_at/started_at/finished_at (unix ms)
    attempts  one row per backend call: job_id, backend, state reserved|settled|released,
              reserved_nusd (the hold), cost_nusd (the bill), day, month (UTC), started_at, ended_at,
              call_ms (the call itself, queueing excluded; v2), error_class, error, usage (JSON), owner,
              call_started_at (the request went out; v3), hosted (a provider that bills what it generates),
              outcome ('unknown': a possible charge, still holding budget), hold_until (when that hold lapses)
    views     reservations (attempts still holding budget), spend_daily / spend_monthly per backend
    reviews, review_items, review_tags   people's accept/reject decisions and the review page's index (v3;
              reviews.py)
    batch_meta, batch_uploads, batches, batch_lines   the batch lanes' uploads, batches and lines (v6; batches.py)

Money is integer nano-dollars (1e-9 USD): exact for token prices quoted to the cent per 1M tokens; GPU-second
costs round to the nano-dollar. Spend in a period = settled costs + open holds, so a budget check inside one
`BEGIN IMMEDIATE` transaction (`reserve`) can never be overshot by concurrent workers. Secrets are never stored.

Split by job: `schema` (migrations, money, records), `lifecycle` (a job's claim, crash recovery and outcome),
`spend` (spend the router reads, budget holds), `reviews`, `batches`, and this module (connections and
transactions, looking jobs up, reading for reports). Import from the wing: `pipeline.ledger`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.ledger.batches import BatchesMixin
from pipeline.ledger.lifecycle import JobsMixin
from pipeline.ledger.reviews import ReviewsMixin
from pipeline.ledger.schema import (
    DB_NAME,
    JobRecord,
    JobStatus,
    from_nusd,
    migrate,
)
from pipeline.ledger.spend import SpendMixin, proc_stat

__all__ = ["Ledger"]


class Ledger(JobsMixin, SpendMixin, ReviewsMixin, BatchesMixin):
    """Thread-safe (one connection per thread); safe across processes on one host (SQLite locking)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, owner: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        stat = proc_stat(os.getpid())  # our start time tells a recycled pid from us
        self.owner = owner or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}" + (f":{stat[1]}" if stat else "")
        )
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._migrate()

    @classmethod
    def in_dir(cls, out_dir: str | Path, **kwargs: Any) -> Ledger:
        return cls(Path(out_dir) / DB_NAME, **kwargs)

    # ---- connections and transactions ---------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (a deferred transaction that reads
        and then writes can fail with SQLITE_BUSY at once, ignoring the busy timeout). `durable`: the commit
        fsyncs the WAL (synchronous=FULL), so not even a power cut loses it (NORMAL survives a killed process)."""
        conn = self._conn()
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # closed from another thread already
                    pass
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._write() as conn:
            migrate(conn, self.path)

    @property
    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    # ---- jobs ----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def get_by_key(self, key: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def latest_key(self, prefix: str) -> str | None:
        """The idempotency key of the newest job whose key starts with `prefix` (a range scan on the key index)."""
        if not prefix:
            raise ValueError("latest_key needs a prefix")
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        row = (
            self._conn()
            .execute(
                "SELECT idempotency_key FROM jobs WHERE idempotency_key >= ? AND idempotency_key < ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (prefix, upper),
            )
            .fetchone()
        )
        return row[0] if row else None

    # ---- reading, for reports ------------------------------------------------------------------------

    def jobs(self, status: JobStatus | None = None) -> Iterator[JobRecord]:
        sql, args = "SELECT * FROM jobs", ()
        if status is not None:
            sql, args = sql + " WHERE status=?", (status,)
        for row in self._conn().execute(sql + " ORDER BY created_at, id", args):
            yield JobRecord.from_row(row)

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

    def attempts(self, job_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM attempts", ()
        if job_id is not None:
            sql, args = sql + " WHERE job_id=?", (job_id,)
        rows = [dict(r) for r in self._conn().execute(sql + " ORDER BY id", args)]
        for r in rows:
            r["cost"] = from_nusd(r.pop("cost_nusd"))
            r["reserved"] = from_nusd(r.pop("reserved_nusd"))
            r["usage"] = json.loads(r["usage"]) if r["usage"] else None
        return rows
