"""What the ledger keeps about batch lanes (OpenAI's Batch API): uploads, batches and their lines.

    batch_uploads  every Files API upload: backend, sha256 of the content, purpose, file id (an image shared by
                   1,000 jobs is uploaded once, also across runs)
    batches        one row per batch, written BEFORE its create call goes out (status 'creating', the local key
                   its `metadata` carries, the input file), and again after (the batch id): a run killed in
                   between finds the batch by listing, never creates it twice; then status, counts, the
                   output/error files and where they were downloaded; `connection` holds the backend's settings
                   (no secret: settings only say where the key lives) for `editroute batch status|cancel`
    batch_lines    custom_id -> job, its idempotency key and budget hold (attempt), its deadline, its state
                   (submitted, completed, failed, expired, cancelled, requeued: sent again in a later batch),
                   where its line is in the input file and its answer in the downloaded output (offsets), or its
                   error

`begin_batch` also marks every line's call as started (committed with a full fsync, as for any hosted call): a
crash from then on keeps the holds as possible charges until a rerun finds the batch and collects it.
Mixed into `Ledger` (store.py).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.ledger.schema import from_nusd, now_ms, to_nusd

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class LineSpec:
    """A line about to go into a batch."""

    custom_id: str
    job_id: str
    idempotency_key: str
    attempt_id: int
    deadline_at: int | None  # unix ms when the job's result is due (None: no deadline)
    in_offset: int
    in_length: int


@dataclass(frozen=True)
class LineUpdate:
    """A line's fate, as collecting its batch found it."""

    custom_id: str
    state: str  # completed | failed | expired | cancelled
    offset: int | None = None  # its answer in the downloaded output file
    length: int | None = None
    error: str | None = None
    cost: Decimal | None = None  # billed (completed lines)


@dataclass(frozen=True)
class BatchLine:
    batch: int
    custom_id: str
    job_id: str
    idempotency_key: str
    attempt_id: int
    deadline_at: int | None
    state: str
    in_offset: int
    in_length: int
    out_offset: int | None
    out_length: int | None
    error: str | None
    cost_nusd: int | None = None  # what the line was billed (its usage at Batch rates), once collected


@dataclass(frozen=True)
class BatchRow:
    id: int
    backend: str
    local_key: str
    batch_id: str | None
    input_file_id: str
    status: str
    lines: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    folder: str | None
    connection: dict[str, Any]
    requeue_of: int | None
    error: str | None
    created_at: int
    submitted_at: int | None
    finished_at: int | None
    collected_at: int | None
    cleaned_at: int | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> BatchRow:
        d = dict(row)
        d.pop("updated_at", None)
        d["connection"] = json.loads(d["connection"]) if d["connection"] else {}
        return cls(**d)


class BatchesMixin:
    owner: str

    if TYPE_CHECKING:  # provided by Ledger

        def _conn(self) -> sqlite3.Connection: ...

        def _write(self, *, durable: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

        def _owner_alive(self, owner: str | None, host: str | None = None) -> bool: ...

    # ---- identity and uploads ------------------------------------------------------------------------------

    def batch_run_key(self) -> str:
        """This output folder's key, in every batch's metadata (made once, kept for good)."""
        row = self._conn().execute("SELECT value FROM batch_meta WHERE name='run_key'").fetchone()
        if row is not None:
            return row[0]
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO batch_meta(name, value) VALUES('run_key', ?)", (uuid.uuid4().hex,))
            return conn.execute("SELECT value FROM batch_meta WHERE name='run_key'").fetchone()[0]

    def find_upload(self, backend: str, sha256: str, purpose: str) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT file_id FROM batch_uploads WHERE backend=? AND sha256=? AND purpose=? ORDER BY id DESC LIMIT 1",
                (backend, sha256, purpose),
            )
            .fetchone()
        )
        return row[0] if row else None

    def record_upload(
        self, backend: str, sha256: str, purpose: str, file_id: str, size: int, filename: str | None
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO batch_uploads(backend, sha256, purpose, file_id, bytes, filename, created_at) "
                "VALUES(?,?,?,?,?,?,?)",
                (backend, sha256, purpose, file_id, size, filename, now_ms()),
            )

    def forget_upload(self, file_id: str) -> None:
        """The provider no longer has this file: upload afresh next time."""
        with self._write() as conn:
            conn.execute("DELETE FROM batch_uploads WHERE file_id=?", (file_id,))

    # ---- a batch's life ------------------------------------------------------------------------------------

    def begin_batch(
        self,
        backend: str,
        local_key: str,
        input_file_id: str,
        folder: str,
        connection: dict[str, Any],
        lines: Sequence[LineSpec],
    ) -> int:
        """Record the batch and its lines BEFORE its create call, and mark each line's call started (durable).
        A line sent again (its earlier batch expired or was cancelled before it ran) leaves its old line
        'requeued'. Returns the batch's row id."""
        t = now_ms()
        with self._write(durable=True) as conn:
            cur = conn.execute(
                "INSERT INTO batches(backend, local_key, input_file_id, status, lines, folder, connection, "
                "created_at, updated_at) VALUES(?,?,?,'creating',?,?,?,?,?)",
                (backend, local_key, input_file_id, len(lines), folder, json.dumps(connection), t, t),
            )
            row_id = int(cur.lastrowid)
            for ln in lines:
                conn.execute(
                    "UPDATE batch_lines SET state='requeued' WHERE attempt_id=? AND state IN "
                    "('expired','cancelled','failed','submitted')",
                    (ln.attempt_id,),
                )
                conn.execute(
                    "INSERT INTO batch_lines(batch, custom_id, job_id, idempotency_key, attempt_id, deadline_at, "
                    "state, in_offset, in_length) VALUES(?,?,?,?,?,?,'submitted',?,?)",
                    (row_id, ln.custom_id, ln.job_id, ln.idempotency_key, ln.attempt_id, ln.deadline_at)
                    + (ln.in_offset, ln.in_length),
                )
                conn.execute(
                    "UPDATE attempts SET call_started_at=?, hosted=1 WHERE id=? AND state='reserved'",
                    (t, ln.attempt_id),
                )
            return row_id

    def batch_created(self, row_id: int, batch_id: str, status: str) -> None:
        """The create call answered (or a lost answer was found by listing): durable."""
        t = now_ms()
        with self._write(durable=True) as conn:
            conn.execute(
                "UPDATE batches SET batch_id=?, status=?, submitted_at=COALESCE(submitted_at, ?), updated_at=? "
                "WHERE id=?",
                (batch_id, status, t, t, row_id),
            )

    def batch_progress(
        self,
        row_id: int,
        status: str,
        *,
        completed: int = 0,
        failed: int = 0,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
        error: str | None = None,
    ) -> None:
        t = now_ms()
        with self._write() as conn:
            conn.execute(
                "UPDATE batches SET status=?, completed=?, failed=?, output_file_id=COALESCE(?, output_file_id), "
                "error_file_id=COALESCE(?, error_file_id), error=COALESCE(?, error), updated_at=?, "
                "finished_at=CASE WHEN ? IN ('completed','failed','expired','cancelled') "
                "THEN COALESCE(finished_at, ?) END WHERE id=?",
                (status, completed, failed, output_file_id, error_file_id, error, t, status, t, row_id),
            )

    def batch_collected(self, row_id: int, updates: Sequence[LineUpdate]) -> None:
        """The answers are on disk: each line's state, where its answer is, its error or what it was billed, in one
        transaction."""
        t = now_ms()
        with self._write() as conn:
            conn.executemany(
                "UPDATE batch_lines SET state=?, out_offset=?, out_length=?, error=?, cost_nusd=? "
                "WHERE batch=? AND custom_id=? AND state='submitted'",
                [
                    (
                        u.state,
                        u.offset,
                        u.length,
                        u.error,
                        None if u.cost is None else to_nusd(u.cost),
                        row_id,
                        u.custom_id,
                    )
                    for u in updates
                ],
            )
            conn.execute("UPDATE batches SET collected_at=?, updated_at=? WHERE id=?", (t, t, row_id))

    def batch_cleaned(self, row_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE batches SET cleaned_at=?, updated_at=? WHERE id=?", (now_ms(), now_ms(), row_id))

    def settle_batch_lines(self, row_id: int) -> tuple[int, int]:
        """A collected batch no live run is following (`editroute batch cancel` after the run stopped): bill each
        answered line's hold at what it was billed, release the holds of lines that never ran (nothing billed).
        Holds a live run owns are left to it. Returns (settled, released)."""
        settled = released = 0
        t = now_ms()
        with self._write() as conn:
            rows = conn.execute(
                "SELECT l.state, l.cost_nusd, a.id, a.owner FROM batch_lines l JOIN attempts a ON a.id=l.attempt_id "
                "WHERE l.batch=? AND l.state!='requeued' AND a.state='reserved'",
                (row_id,),
            ).fetchall()
            for state, cost, attempt_id, owner in rows:
                if owner != self.owner and self._owner_alive(owner):
                    continue
                if state == "completed":
                    conn.execute(
                        "UPDATE attempts SET state='settled', cost_nusd=?, ended_at=?, outcome=NULL, hold_until=NULL "
                        "WHERE id=?",
                        (cost or 0, t, attempt_id),
                    )
                    settled += 1
                elif state in ("cancelled", "expired", "failed"):
                    conn.execute(
                        "UPDATE attempts SET state='released', ended_at=?, outcome=NULL, hold_until=NULL, "
                        "error=? WHERE id=?",
                        (t, f"its batch line was {state}: it did not run, nothing was billed", attempt_id),
                    )
                    released += 1
        return settled, released

    # ---- reading -------------------------------------------------------------------------------------------

    def batch_row(self, row_id: int) -> BatchRow | None:
        row = self._conn().execute("SELECT * FROM batches WHERE id=?", (row_id,)).fetchone()
        return BatchRow.from_row(row) if row else None

    def batch_key_known(self, local_key: str) -> bool:
        """Some batch (of any lane) was recorded under this local key."""
        return self._conn().execute("SELECT 1 FROM batches WHERE local_key=?", (local_key,)).fetchone() is not None

    def batch_rows(self, *, backend: str | None = None, uncollected: bool = False) -> list[BatchRow]:
        sql, args = "SELECT * FROM batches WHERE 1=1", []
        if backend is not None:
            sql, args = sql + " AND backend=?", [*args, backend]
        if uncollected:
            sql += " AND collected_at IS NULL"
        return [BatchRow.from_row(r) for r in self._conn().execute(sql + " ORDER BY id", args)]

    def batch_lines(self, row_id: int) -> list[BatchLine]:
        rows = self._conn().execute("SELECT * FROM batch_lines WHERE batch=? ORDER BY in_offset", (row_id,))
        return [BatchLine(**dict(r)) for r in rows]

    def batch_line_for(self, attempt_id: int) -> BatchLine | None:
        """The line of this budget hold (its newest: a line sent again is in a later batch)."""
        row = (
            self._conn()
            .execute(
                "SELECT * FROM batch_lines WHERE attempt_id=? AND state!='requeued' ORDER BY batch DESC LIMIT 1",
                (attempt_id,),
            )
            .fetchone()
        )
        return BatchLine(**dict(row)) if row else None

    def batch_pending(self, job_id: str, key: str) -> list[tuple[str, int, float]]:
        """What a rerun finishes from a batch for these inputs: (backend, attempt id, when it was recorded) of the
        job's newest line when its answer is in (completed: paid for) or its hold is still open (in a batch,
        or an answer not yet used); [] otherwise (nothing in a batch, or already taken care of)."""
        row = (
            self._conn()
            .execute(
                "SELECT b.backend, l.attempt_id, l.state, b.created_at, a.state AS held FROM batch_lines l "
                "JOIN batches b ON b.id=l.batch LEFT JOIN attempts a ON a.id=l.attempt_id "
                "WHERE l.job_id=? AND l.idempotency_key=? AND l.state!='requeued' ORDER BY l.batch DESC LIMIT 1",
                (job_id, key),
            )
            .fetchone()
        )
        if row is None or not (row["state"] == "completed" or row["held"] == "reserved"):
            return []
        return [(row["backend"], int(row["attempt_id"]), row["created_at"] / 1000)]

    def batch_charged(self, row_id: int) -> Decimal:
        """What this batch's lines were billed: each answered line's usage at Batch rates, recorded when collected."""
        nusd = (
            self._conn()
            .execute(
                "SELECT COALESCE(SUM(cost_nusd), 0) FROM batch_lines WHERE batch=? AND state='completed'", (row_id,)
            )
            .fetchone()[0]
        )
        return from_nusd(nusd)

    def batch_done_with(self, row_id: int) -> bool:
        """Every line of the batch has been used: its job is finished (done or failed) or it was sent again."""
        left = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM batch_lines l LEFT JOIN jobs j ON j.id=l.job_id WHERE l.batch=? AND "
                "l.state!='requeued' AND (j.status IS NULL OR j.status NOT IN ('done','failed') OR "
                "j.idempotency_key!=l.idempotency_key)",
                (row_id,),
            )
            .fetchone()[0]
        )
        return left == 0

    def batch_summaries(self) -> list[dict[str, Any]]:
        """One dict per batch, for the report and `editroute batch status`."""
        out = []
        for row in self.batch_rows():
            states = dict(
                self._conn().execute("SELECT state, COUNT(*) FROM batch_lines WHERE batch=? GROUP BY state", (row.id,))
            )
            out.append(
                {
                    "backend": row.backend,
                    "batch_id": row.batch_id,
                    "status": row.status,
                    "lines": row.lines,
                    "completed": row.completed,
                    "failed": row.failed,
                    "line_states": states,
                    "charged_usd": str(self.batch_charged(row.id)),
                    "created_at": row.created_at,
                    "requeued": states.get("requeued", 0),
                    "error": row.error,
                }
            )
        return out
