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
              call_ms (the call itself, queueing excluded; v2), error_class, error, usage (JSON), owner
    views     reservations (attempts still holding budget), spend_daily / spend_monthly per backend

Money is integer nano-dollars (1e-9 USD): exact for token prices quoted to the cent per 1M tokens; GPU-second
costs round to the nano-dollar. Spend in a period = settled costs + open holds, so a budget check inside one
`BEGIN IMMEDIATE` transaction (`reserve`) can never be overshot by concurrent workers. Secrets are never stored.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Literal

from backends.errors import BudgetExceeded, InvalidRequest
from pipeline.spend import Period, period_key

log = logging.getLogger(__name__)

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
]

# What an attempt counts for: an open hold counts its reservation, anything else what was actually billed.
_HELD = "CASE state WHEN 'reserved' THEN reserved_nusd ELSE cost_nusd END"


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
        limit = " and ".join(x for x in (fmt_usd(self.usd) if self.usd is not None else "",
                                         f"{self.jobs} jobs" if self.jobs is not None else "") if x)
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
            id=d["id"], idempotency_key=d["idempotency_key"], request_hash=d["request_hash"], status=d["status"],
            backend=d["backend"], planned_backend=d["planned_backend"],
            estimate=None if d["estimate_nusd"] is None else from_nusd(d["estimate_nusd"]),
            attempts=d["attempts"], starts=d["starts"], crashes=d["crashes"], owner=d["owner"],
            outputs=tuple(json.loads(d["outputs"])) if d["outputs"] else (), cost=from_nusd(d["cost_nusd"]),
            error_class=d["error_class"], error=d["error"], created_at=d["created_at"], updated_at=d["updated_at"],
            started_at=d["started_at"], finished_at=d["finished_at"])


ClaimAction = Literal["run", "done", "failed", "busy", "duplicate"]


@dataclass(frozen=True)
class Claim:
    """What `Ledger.claim` decided. `run`: this process now owns the job (status running). `done`: finished
    before (verify its outputs). `failed`: failed before and not retried. `busy`: another live process (or this
    one) is running it. `duplicate`: the same inputs were already submitted as job `record.id`."""

    action: ClaimAction
    record: JobRecord
    recovered: bool = False  # the job was left running by a crashed process and is being retried


class Ledger:
    """Thread-safe (one connection per thread); safe across processes on one host (SQLite locking)."""

    MAX_CRASH_RESTARTS = 1  # a job found `running` after a crash is retried this many times, then failed

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, owner: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (a deferred transaction that reads
        and then writes can fail with SQLITE_BUSY at once, ignoring the busy timeout)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(f"{self.path}: ledger schema v{version} is newer than this editroute "
                                   f"(knows v{len(MIGRATIONS)}); upgrade editroute")
            for v in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={v + 1}")

    @property
    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    # ---- SpendSource ---------------------------------------------------------------------------------

    def spent(self, backend: str | None, period: Period, at: datetime | None = None) -> Decimal:
        return from_nusd(self._spent_nusd(self._conn(), backend, period, period_key(period, at)))

    def job_count(self, backend: str | None, period: Period, at: datetime | None = None) -> int:
        return self._job_count(self._conn(), backend, period, period_key(period, at))

    @staticmethod
    def _spent_nusd(conn: sqlite3.Connection, backend: str | None, period: Period, key: str) -> int:
        col = "day" if period == "day" else "month"
        sql = f"SELECT COALESCE(SUM({_HELD}), 0) FROM attempts WHERE {col}=?"
        args: list[Any] = [key]
        if backend is not None:
            sql += " AND backend=?"
            args.append(backend)
        return conn.execute(sql, args).fetchone()[0]

    @staticmethod
    def _job_count(conn: sqlite3.Connection, backend: str | None, period: Period, key: str,
                   job_id: str | None = None) -> int:
        """Jobs served or being served: distinct jobs with an open hold or a successful call in the period."""
        col = "day" if period == "day" else "month"
        sql = (f"SELECT COUNT(DISTINCT job_id) FROM attempts WHERE {col}=? AND "
               "(state='reserved' OR (state='settled' AND error_class IS NULL))")
        args: list[Any] = [key]
        if job_id is not None:
            sql += " AND job_id=?"
            args.append(job_id)
        if backend is not None:
            sql += " AND backend=?"
            args.append(backend)
        return conn.execute(sql, args).fetchone()[0]

    # ---- budget holds --------------------------------------------------------------------------------

    def reserve(self, job_id: str, backend: str, estimate: Decimal, caps: Sequence[BudgetCap] = (),
                at: datetime | None = None) -> int:
        """Hold `estimate` on `backend` for one call, checking every cap in the same write transaction
        (settled + open holds + this estimate <= limit). Returns the attempt id; raises `BudgetExceeded`."""
        at = at or datetime.now(UTC)
        day, month = period_key("day", at), period_key("month", at)
        want = to_nusd(estimate, round_up=True)
        with self._write() as conn:
            for cap in caps:
                if cap.backend not in (None, backend):
                    continue
                key = day if cap.period == "day" else month
                if cap.usd is not None:
                    used = self._spent_nusd(conn, cap.backend, cap.period, key)
                    if used + want > to_nusd(cap.usd):
                        raise BudgetExceeded(
                            f"budget {cap.describe()} would be exceeded: {fmt_usd(from_nusd(used))} spent or held, "
                            f"this call needs up to {fmt_usd(from_nusd(want))}", job_id=job_id, backend=backend)
                if cap.jobs is not None:
                    count = self._job_count(conn, cap.backend, cap.period, key)
                    counted = self._job_count(conn, cap.backend, cap.period, key, job_id)  # a retry is not a new job
                    if count + (0 if counted else 1) > cap.jobs:
                        raise BudgetExceeded(f"budget {cap.describe()} reached ({count} jobs)",
                                             job_id=job_id, backend=backend)
            cur = conn.execute(
                "INSERT INTO attempts(job_id, backend, state, reserved_nusd, day, month, started_at, owner) "
                "VALUES(?,?,'reserved',?,?,?,?,?)", (job_id, backend, want, day, month, now_ms(), self.owner))
            conn.execute("UPDATE jobs SET attempts=attempts+1, backend=?, updated_at=? WHERE id=?",
                         (backend, now_ms(), job_id))
            return int(cur.lastrowid)

    def settle(self, attempt_id: int, cost: Decimal, *, usage: dict[str, Any] | None = None,
               error: BaseException | None = None) -> None:
        """The call returned (or failed): replace the hold by what it actually cost."""
        with self._write() as conn:
            self._settle(conn, attempt_id, cost, usage, error)

    @staticmethod
    def _settle(conn: sqlite3.Connection, attempt_id: int, cost: Decimal, usage: dict[str, Any] | None,
                error: BaseException | None, call_s: float | None = None) -> None:
        conn.execute(
            "UPDATE attempts SET state='settled', cost_nusd=?, ended_at=?, usage=?, error_class=?, error=?, "
            "call_ms=? WHERE id=?",
            (to_nusd(cost), now_ms(), json.dumps(usage) if usage else None,
             type(error).__name__ if error else None, str(error) if error else None,
             None if call_s is None else round(call_s * 1000), attempt_id))

    def release(self, attempt_id: int, reason: str = "released") -> None:
        """Drop a hold without a bill (the call never ran)."""
        with self._write() as conn:
            conn.execute("UPDATE attempts SET state='released', ended_at=?, error=COALESCE(error, ?) "
                         "WHERE id=? AND state='reserved'", (now_ms(), reason, attempt_id))

    def release_orphans(self) -> int:
        """Release holds left by processes on this host that are gone (crashed): they block budgets otherwise.
        A call that was billed upstream but never returned cannot be known; it is not counted."""
        host = socket.gethostname()
        with self._write() as conn:
            rows = conn.execute("SELECT id, owner FROM attempts WHERE state='reserved'").fetchall()
            dead = [r["id"] for r in rows if not self._owner_alive(r["owner"], host)]
            for attempt_id in dead:
                conn.execute("UPDATE attempts SET state='released', ended_at=?, error_class='Interrupted', "
                             "error='the process holding this call stopped' WHERE id=?", (now_ms(), attempt_id))
        return len(dead)

    def _owner_alive(self, owner: str | None, host: str | None = None) -> bool:
        if not owner or owner == self.owner:
            return owner == self.owner
        h, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if h != (host or socket.gethostname()) or not pid_text.isdigit():
            return True  # another host's process: assume alive (the ledger must not be shared across hosts)
        pid = int(pid_text)
        if pid == os.getpid():
            return False  # our pid, a different run id: an earlier run of a recycled pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # ---- jobs ----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def get_by_key(self, key: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def claim(self, job_id: str, key: str, request_hash: str, *, retry_failed: bool = False, rerun: bool = False,
              planned_backend: str | None = None, estimate: Decimal | None = None) -> Claim:
        """Register the job if new, and take it (status `running`, owned by this ledger's owner) if it should
        run now. `rerun` takes a `done` job again (its outputs were found missing or changed on disk)."""
        t = now_ms()
        est = None if estimate is None else to_nusd(estimate, round_up=True)
        with self._write() as conn:
            other = conn.execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
            if other is not None and other["request_hash"] != request_hash:
                raise InvalidRequest("idempotency key reused with a different request", field="idempotency_key",
                                     job_id=job_id)
            if other is not None and other["id"] != job_id:
                return Claim("duplicate", JobRecord.from_row(other))
            row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None and row["idempotency_key"] != key:
                log.warning("job %s: inputs changed since it was last recorded; running it again", job_id)
                conn.execute(
                    "UPDATE jobs SET idempotency_key=?, request_hash=?, status='queued', outputs=NULL, cost_nusd=0, "
                    "attempts=0, starts=0, crashes=0, error_class=NULL, error=NULL, owner=NULL, updated_at=? "
                    "WHERE id=?", (key, request_hash, t, job_id))
                row = None if row is None else conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
                             "VALUES(?,?,?,'queued',?,?)", (job_id, key, request_hash, t, t))
                row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            rec = JobRecord.from_row(row)
            recovered = False
            if rec.status == "done" and not rerun:
                return Claim("done", rec)
            if rec.status == "failed" and not retry_failed:
                return Claim("failed", rec)
            if rec.status == "running":
                if rec.owner == self.owner or self._owner_alive(rec.owner):
                    return Claim("busy", rec)
                recovered = True
                crashes = rec.crashes + 1
                self._release_job_holds(conn, job_id)
                if crashes > self.MAX_CRASH_RESTARTS and not retry_failed:
                    msg = (f"interrupted by a crash {crashes} times; not retried again automatically "
                           "(rerun with --retry-failed)")
                    conn.execute("UPDATE jobs SET status='failed', crashes=?, error_class='Interrupted', error=?, "
                                 "owner=NULL, updated_at=?, finished_at=? WHERE id=?", (crashes, msg, t, t, job_id))
                    return Claim("failed", self._get(conn, job_id), recovered=True)
                conn.execute("UPDATE jobs SET crashes=? WHERE id=?", (crashes, job_id))
            elif rec.status == "interrupted":
                self._release_job_holds(conn, job_id)
            conn.execute(
                "UPDATE jobs SET status='running', owner=?, starts=starts+1, started_at=?, updated_at=?, "
                "error_class=NULL, error=NULL, planned_backend=COALESCE(?, planned_backend), "
                "estimate_nusd=COALESCE(?, estimate_nusd) WHERE id=?",
                (self.owner, t, t, planned_backend, est, job_id))
            return Claim("run", self._get(conn, job_id), recovered=recovered)

    def note_plan(self, job_id: str, backend: str | None, estimate: Decimal | None) -> None:
        """The router's choice and estimate, for `report`'s spend-versus-plan."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET planned_backend=?, estimate_nusd=?, updated_at=? WHERE id=?",
                         (backend, None if estimate is None else to_nusd(estimate, round_up=True), now_ms(), job_id))

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> JobRecord:
        return JobRecord.from_row(conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def _release_job_holds(self, conn: sqlite3.Connection, job_id: str) -> None:
        conn.execute("UPDATE attempts SET state='released', ended_at=?, error_class='Interrupted', "
                     "error='the process holding this call stopped' WHERE job_id=? AND state='reserved'",
                     (now_ms(), job_id))

    def complete(self, job_id: str, *, backend: str, outputs: Sequence[dict[str, str]], cost: Decimal,
                 attempt_id: int, usage: dict[str, Any] | None = None, call_s: float | None = None) -> None:
        """Outputs are on disk: settle the call (`reserve`'s attempt id) and mark the job done, in one
        transaction. The job's cost is everything settled for it; `call_s` is the call's own duration."""
        t = now_ms()
        with self._write() as conn:
            self._settle(conn, attempt_id, cost, usage, None, call_s)
            conn.execute("UPDATE jobs SET status='done', backend=?, outputs=?, cost_nusd=?, owner=NULL, "
                         "error_class=NULL, error=NULL, updated_at=?, finished_at=? WHERE id=?",
                         (backend, json.dumps(list(outputs)), self._job_cost(conn, job_id), t, t, job_id))

    @staticmethod
    def _job_cost(conn: sqlite3.Connection, job_id: str) -> int:
        """Everything billed for this job: failed calls that consumed GPU time count too."""
        return conn.execute("SELECT COALESCE(SUM(cost_nusd), 0) FROM attempts WHERE job_id=? AND state='settled'",
                            (job_id,)).fetchone()[0]

    def adopt(self, job_id: str, *, backend: str, outputs: Sequence[dict[str, str]], cost: Decimal,
              usage: dict[str, Any] | None = None) -> None:
        """A crash came after the outputs were written but before `complete`: bill the call that made them
        (its hold, or a new settled row) and mark the job done, so it is neither lost nor paid twice."""
        t = now_ms()
        with self._write() as conn:
            row = conn.execute("SELECT id FROM attempts WHERE job_id=? AND backend=? AND state IN "
                               "('reserved','released') AND error_class IS NOT 'RateLimited' ORDER BY id DESC LIMIT 1",
                               (job_id, backend)).fetchone()
            if row is not None:
                self._settle(conn, row["id"], cost, usage, None)
            else:
                at = datetime.now(UTC)
                conn.execute("INSERT INTO attempts(job_id, backend, state, reserved_nusd, cost_nusd, day, month, "
                             "started_at, ended_at, usage, owner) VALUES(?,?,'settled',0,?,?,?,?,?,?,?)",
                             (job_id, backend, to_nusd(cost), period_key("day", at), period_key("month", at), t, t,
                              json.dumps(usage) if usage else None, self.owner))
            conn.execute("UPDATE jobs SET status='done', backend=?, outputs=?, cost_nusd=?, owner=NULL, error=NULL, "
                         "error_class=NULL, updated_at=?, finished_at=? WHERE id=?",
                         (backend, json.dumps(list(outputs)), self._job_cost(conn, job_id), t, t, job_id))

    def fail(self, job_id: str, error: BaseException | str, *, error_class: str | None = None,
             backend: str | None = None) -> None:
        t = now_ms()
        cls = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
        with self._write() as conn:
            self._release_job_holds(conn, job_id)
            cost = self._job_cost(conn, job_id)
            conn.execute("UPDATE jobs SET status='failed', backend=COALESCE(?, backend), error_class=?, error=?, "
                         "cost_nusd=?, owner=NULL, updated_at=?, finished_at=? WHERE id=?",
                         (backend, cls, str(error), cost, t, t, job_id))

    def record_invalid(self, job_id: str, key: str, request_hash: str, error: BaseException | str) -> None:
        """A job that failed validation before it could run (bad manifest entry, corrupt image)."""
        t = now_ms()
        with self._write() as conn:
            conn.execute("INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
                         "VALUES(?,?,?,'failed',?,?) ON CONFLICT(id) DO UPDATE SET idempotency_key=excluded."
                         "idempotency_key, request_hash=excluded.request_hash, status='failed', owner=NULL, "
                         "outputs=NULL", (job_id, key, request_hash, t, t))
        self.fail(job_id, error, error_class=type(error).__name__ if isinstance(error, BaseException) else None)

    def interrupt(self, job_ids: Sequence[str] | None = None) -> int:
        """Mark this process's running jobs (or the given ones) interrupted and drop their holds (Ctrl-C)."""
        t = now_ms()
        with self._write() as conn:
            if job_ids is None:
                job_ids = [r["id"] for r in conn.execute("SELECT id FROM jobs WHERE status='running' AND owner=?",
                                                         (self.owner,))]
            for job_id in job_ids:
                self._release_job_holds(conn, job_id)
                conn.execute("UPDATE jobs SET status='interrupted', owner=NULL, error_class='Interrupted', "
                             "error='stopped before it finished', updated_at=? WHERE id=? AND status='running'",
                             (t, job_id))
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

    def total_spent(self, backend: str | None = None) -> Decimal:
        sql, args = f"SELECT COALESCE(SUM({_HELD}), 0) FROM attempts", ()
        if backend is not None:
            sql, args = sql + " WHERE backend=?", (backend,)
        return from_nusd(self._conn().execute(sql, args).fetchone()[0])

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
