"""A job's life in the ledger: the exactly-once claim (with crash recovery: who died holding it, whether a call
of it was in flight), the router's plan, and how it ends: done (`complete`, or `adopt` of what a crash left on
disk), failed, invalid before it could run, served by a duplicate's outputs, or interrupted. Every change is one
`BEGIN IMMEDIATE` transaction, so two processes never both take a job. Mixed into `Ledger` (store.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from backends.errors import InvalidRequest
from pipeline.ledger.schema import Claim, JobRecord, from_nusd, now_ms, to_nusd
from pipeline.routing import period_key

log = logging.getLogger(__name__)


if TYPE_CHECKING:  # the connections come from Ledger, the holds from SpendMixin: both mixed into Ledger
    from pipeline.ledger.spend import SpendMixin as _LedgerParts
else:
    _LedgerParts = object


class JobsMixin(_LedgerParts):
    owner: str
    MAX_CRASH_RESTARTS = 1  # a job found `running` after a crash is retried this many times, then failed

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
