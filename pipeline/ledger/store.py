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

Split in three: `schema` (migrations, money, records), `spend` (spend the router reads, budget holds), and
this module (connections, the job lifecycle, reading for reports). Import from the wing: `pipeline.ledger`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from backends.errors import InvalidRequest
from pipeline.ledger.batches import BatchesMixin
from pipeline.ledger.reviews import ReviewsMixin
from pipeline.ledger.schema import (
    DB_NAME,
    Claim,
    JobRecord,
    JobStatus,
    from_nusd,
    migrate,
    now_ms,
    to_nusd,
)
from pipeline.ledger.spend import SpendMixin, proc_stat
from pipeline.routing import period_key

__all__ = ["Ledger"]

log = logging.getLogger(__name__)


class Ledger(SpendMixin, ReviewsMixin, BatchesMixin):
    """Thread-safe (one connection per thread); safe across processes on one host (SQLite locking)."""

    MAX_CRASH_RESTARTS = 1  # a job found `running` after a crash is retried this many times, then failed

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

    def claim(
        self,
        job_id: str,
        key: str,
        request_hash: str,
        *,
        retry_failed: bool = False,
        rerun: bool = False,
        paid_on_disk: bool = False,
    ) -> Claim:
        """Register the job if new, and take it (status `running`, owned by this ledger's owner) if it should
        run now. `rerun` takes a `done` job again (its outputs were found missing or changed on disk).

        A job left `running` by a dead process counts a crash only if a call of it was in flight (started, not
        settled) when the process died; one merely queued does not. Past `MAX_CRASH_RESTARTS` crashes it fails
        (not retried automatically), unless `paid_on_disk`: a verified result or a journaled answer is on disk,
        so finishing it costs nothing; such a job is taken even if an earlier run failed it."""
        t = now_ms()
        with self._write() as conn:
            other = conn.execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
            if other is not None and other["request_hash"] != request_hash:
                raise InvalidRequest(
                    "idempotency key reused with a different request", field="idempotency_key", job_id=job_id
                )
            if other is not None and other["id"] != job_id:
                return Claim("duplicate", JobRecord.from_row(other))
            row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None and row["idempotency_key"] != key:
                log.warning("job %s: inputs changed since it was last recorded; running it again", job_id)
                conn.execute(
                    "UPDATE jobs SET idempotency_key=?, request_hash=?, status='queued', outputs=NULL, cost_nusd=0, "
                    "attempts=0, starts=0, crashes=0, error_class=NULL, error=NULL, owner=NULL, updated_at=? "
                    "WHERE id=?",
                    (key, request_hash, t, job_id),
                )
                row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
                    "VALUES(?,?,?,'queued',?,?)",
                    (job_id, key, request_hash, t, t),
                )
                row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            rec = JobRecord.from_row(row)
            recovered = False
            if rec.status == "done" and not rerun:
                return Claim("done", rec)
            if rec.status == "failed" and not (retry_failed or paid_on_disk):
                return Claim("failed", rec)
            if rec.status == "running":
                if rec.owner == self.owner or self._owner_alive(rec.owner):
                    return Claim("busy", rec)
                recovered = True
                self._release_job_holds(conn, job_id)  # (or `recover_orphans` did, at the start of this run)
                in_flight = conn.execute(  # a call of the dead run, cut off by its death after it went out
                    "SELECT 1 FROM attempts WHERE job_id=? AND owner=? AND call_started_at IS NOT NULL "
                    "AND error_class='Interrupted' LIMIT 1",
                    (job_id, rec.owner),
                ).fetchone()
                crashes = rec.crashes + (1 if in_flight and not paid_on_disk else 0)
                if crashes > self.MAX_CRASH_RESTARTS and not (retry_failed or paid_on_disk):
                    msg = (
                        f"interrupted by a crash {crashes} times; not retried again automatically "
                        "(rerun with --retry-failed)"
                    )
                    conn.execute(
                        "UPDATE jobs SET status='failed', crashes=?, error_class='Interrupted', error=?, "
                        "owner=NULL, updated_at=?, finished_at=? WHERE id=?",
                        (crashes, msg, t, t, job_id),
                    )
                    return Claim("failed", self._get(conn, job_id), recovered=True)
                conn.execute("UPDATE jobs SET crashes=? WHERE id=?", (crashes, job_id))
            elif rec.status == "interrupted":
                self._release_job_holds(conn, job_id)
            conn.execute(
                "UPDATE jobs SET status='running', owner=?, starts=starts+1, started_at=?, updated_at=?, "
                "error_class=NULL, error=NULL WHERE id=?",
                (self.owner, t, t, job_id),
            )
            return Claim("run", self._get(conn, job_id), recovered=recovered)

    def note_plan(self, job_id: str, backend: str | None, estimate: Decimal | None) -> None:
        """The router's choice and estimate, for `report`'s spend-versus-plan."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET planned_backend=?, estimate_nusd=?, updated_at=? WHERE id=?",
                (backend, None if estimate is None else to_nusd(estimate, round_up=True), now_ms(), job_id),
            )

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> JobRecord:
        return JobRecord.from_row(conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def _release_job_holds(self, conn: sqlite3.Connection, job_id: str) -> None:
        """The job's open holds, whose calls will not report back: released, or possible charges (spend.py)."""
        self._close_holds(conn, "job_id=?", (job_id,))

    def complete(
        self,
        job_id: str,
        *,
        backend: str,
        outputs: Sequence[dict[str, str]],
        cost: Decimal,
        attempt_id: int,
        usage: dict[str, Any] | None = None,
        call_s: float | None = None,
        model: str | None = None,
    ) -> Decimal:
        """Outputs are on disk: settle the call (`reserve`'s attempt id) and mark the job done, in one
        transaction. Returns the job's cost: everything settled for it; `call_s` is the call's own duration,
        `model` what the backend ran (the report compares its estimates with its bills)."""
        t = now_ms()
        with self._write() as conn:
            self._settle(conn, attempt_id, cost, usage, None, call_s)
            if model is not None:
                conn.execute("UPDATE attempts SET model=? WHERE id=?", (model, attempt_id))
            job_cost = self._job_cost(conn, job_id)
            conn.execute(
                "UPDATE jobs SET status='done', backend=?, outputs=?, cost_nusd=?, owner=NULL, "
                "error_class=NULL, error=NULL, updated_at=?, finished_at=? WHERE id=?",
                (backend, json.dumps(list(outputs)), job_cost, t, t, job_id),
            )
        return from_nusd(job_cost)

    @staticmethod
    def _job_cost(conn: sqlite3.Connection, job_id: str) -> int:
        """Everything billed for this job: failed calls that consumed GPU time count too."""
        return conn.execute(
            "SELECT COALESCE(SUM(cost_nusd), 0) FROM attempts WHERE job_id=? AND state='settled'", (job_id,)
        ).fetchone()[0]

    def adopt(
        self,
        job_id: str,
        *,
        backend: str,
        outputs: Sequence[dict[str, str]],
        cost: Decimal,
        usage: dict[str, Any] | None = None,
        attempt_id: int | None = None,
    ) -> None:
        """A crash came after the outputs were written but before `complete`: bill the call that made them
        (`attempt_id` as result.json names it, else the job's latest open call on `backend`, else a new settled
        row) and mark the job done, so it is neither lost nor paid twice."""
        t = now_ms()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM attempts WHERE id=? AND job_id=? AND state!='settled'", (attempt_id, job_id)
            ).fetchone()
            row = (
                row
                or conn.execute(
                    "SELECT id FROM attempts WHERE job_id=? AND backend=? AND state IN "
                    "('reserved','released') AND error_class IS NOT 'RateLimited' ORDER BY id DESC LIMIT 1",
                    (job_id, backend),
                ).fetchone()
            )
            if row is not None:
                self._settle(conn, row["id"], cost, usage, None)
            else:
                at = datetime.now(UTC)
                conn.execute(
                    "INSERT INTO attempts(job_id, backend, state, reserved_nusd, cost_nusd, day, month, "
                    "started_at, ended_at, usage, owner) VALUES(?,?,'settled',0,?,?,?,?,?,?,?)",
                    (
                        job_id,
                        backend,
                        to_nusd(cost),
                        period_key("day", at),
                        period_key("month", at),
                        t,
                        t,
                        json.dumps(usage) if usage else None,
                        self.owner,
                    ),
                )
            conn.execute(
                "UPDATE jobs SET status='done', backend=?, outputs=?, cost_nusd=?, owner=NULL, error=NULL, "
                "error_class=NULL, updated_at=?, finished_at=? WHERE id=?",
                (backend, json.dumps(list(outputs)), self._job_cost(conn, job_id), t, t, job_id),
            )

    def fail(
        self, job_id: str, error: BaseException | str, *, error_class: str | None = None, backend: str | None = None
    ) -> None:
        t = now_ms()
        cls = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
        with self._write() as conn:
            self._release_job_holds(conn, job_id)
            cost = self._job_cost(conn, job_id)
            conn.execute(
                "UPDATE jobs SET status='failed', backend=COALESCE(?, backend), error_class=?, error=?, "
                "cost_nusd=?, owner=NULL, updated_at=?, finished_at=? WHERE id=?",
                (backend, cls, str(error), cost, t, t, job_id),
            )

    def record_invalid(self, job_id: str, error: BaseException | str) -> None:
        """A job that failed validation before it could run (bad manifest entry, unreadable input). Its inputs
        could not be hashed, so its key is a placeholder unique to the job id (a fixed job gets its real key)."""
        t = now_ms()
        key = request_hash = hashlib.sha256(f"invalid:{job_id}".encode()).hexdigest()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
                "VALUES(?,?,?,'failed',?,?) ON CONFLICT(id) DO UPDATE SET idempotency_key=excluded."
                "idempotency_key, request_hash=excluded.request_hash, status='failed', owner=NULL, "
                "outputs=NULL",
                (job_id, key, request_hash, t, t),
            )
        self.fail(job_id, error, error_class=type(error).__name__ if isinstance(error, BaseException) else None)

    def record_duplicate(self, job_id: str, of: JobRecord) -> None:
        """`job_id` has the same inputs as the done job `of`: it is done by `of`'s outputs, at no cost of its own
        (so the report counts it, and a row left failed by an earlier problem no longer says failed)."""
        t = now_ms()
        key = hashlib.sha256(f"duplicate:{job_id}:{of.idempotency_key}".encode()).hexdigest()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
                "VALUES(?,?,?,'done',?,?) ON CONFLICT(id) DO NOTHING",
                (job_id, key, of.request_hash, t, t),
            )
            conn.execute(
                "UPDATE jobs SET status='done', backend=?, outputs=?, owner=NULL, error_class=NULL, error=?, "
                "updated_at=?, finished_at=? WHERE id=? AND status!='running'",
                (
                    of.backend,
                    json.dumps(list(of.outputs)),
                    f"same inputs as job {of.id!r}: its outputs serve this one",
                    t,
                    t,
                    job_id,
                ),
            )

    def interrupt(self, job_ids: Sequence[str] | None = None) -> int:
        """Mark this process's running jobs (or the given ones) interrupted and drop their holds (Ctrl-C)."""
        t = now_ms()
        with self._write() as conn:
            if job_ids is None:
                job_ids = [
                    r["id"]
                    for r in conn.execute("SELECT id FROM jobs WHERE status='running' AND owner=?", (self.owner,))
                ]
            for job_id in job_ids:
                self._release_job_holds(conn, job_id)
                conn.execute(
                    "UPDATE jobs SET status='interrupted', owner=NULL, error_class='Interrupted', "
                    "error='stopped before it finished', updated_at=? WHERE id=? AND status='running'",
                    (t, job_id),
                )
        return len(job_ids)

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
