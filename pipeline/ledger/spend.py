"""Spend and budget holds: what the router reads (`spent`, `job_count`) and how calls hold and settle money.

A call reserves its estimate (`reserve`, checking every cap in the same `BEGIN IMMEDIATE` transaction, so
concurrent workers never overshoot), records durably that it is going out (`call_started`), then settles what it
actually cost (`settle`) or drops the hold (`release`).

Possible charges. A hosted call whose answer never came (its run was killed, or the connection dropped after
the request went out: `hold_unknown`) may have been billed. Its hold is kept, with outcome 'unknown', and counts
against every budget of its day and month like any hold, until it is resolved (the answer was journaled and a
rerun finishes from it: `take_over`; its result is adopted from disk) or `unknown_outcome_hold_s` passes (the
policy's `unknown_outcome_hold`; None: until its periods end). A hold whose call never started, or a self-hosted
call (nobody bills it), is released at $0. `recover_orphans` applies this to the holds of runs that died.
Mixed into `Ledger` (store.py), which provides the connection (`_conn`), write transactions (`_write`)
and `owner`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.errors import BudgetExceeded
from pipeline.ledger.schema import HELD, BudgetCap, OrphanHolds, fmt_usd, from_nusd, now_ms, to_nusd
from pipeline.routing import Period, period_key


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process from /proc/PID/stat (Linux), else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) onwards
    return (fields[0], fields[19]) if len(fields) > 19 else None


class SpendMixin:
    owner: str
    # How long a possible charge (a call of unknown outcome) holds budget, in seconds; None: for as long as the
    # day and month it was made in last. The runner sets it from the policy's `unknown_outcome_hold`.
    unknown_outcome_hold_s: float | None = None

    if TYPE_CHECKING:  # provided by Ledger

        def _conn(self) -> sqlite3.Connection: ...

        def _write(self, *, durable: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    # ---- SpendSource (what the router reads) -------------------------------------------------------

    def spent(self, backend: str | None, period: Period, at: datetime | None = None) -> Decimal:
        return from_nusd(self._spent_nusd(self._conn(), backend, period, period_key(period, at)))

    def job_count(self, backend: str | None, period: Period, at: datetime | None = None) -> int:
        return self._job_count(self._conn(), backend, period, period_key(period, at))

    @staticmethod
    def _spent_nusd(conn: sqlite3.Connection, backend: str | None, period: Period, key: str) -> int:
        col = "day" if period == "day" else "month"
        sql = f"SELECT COALESCE(SUM({HELD}), 0) FROM attempts WHERE {col}=?"
        args: list[Any] = [key]
        if backend is not None:
            sql += " AND backend=?"
            args.append(backend)
        return conn.execute(sql, args).fetchone()[0]

    @staticmethod
    def _job_count(
        conn: sqlite3.Connection, backend: str | None, period: Period, key: str, job_id: str | None = None
    ) -> int:
        """Jobs served or being served: distinct jobs with an open hold or a successful call in the period."""
        col = "day" if period == "day" else "month"
        sql = (
            f"SELECT COUNT(DISTINCT job_id) FROM attempts WHERE {col}=? AND "
            "(state='reserved' OR (state='settled' AND error_class IS NULL))"
        )
        args: list[Any] = [key]
        if job_id is not None:
            sql += " AND job_id=?"
            args.append(job_id)
        if backend is not None:
            sql += " AND backend=?"
            args.append(backend)
        return conn.execute(sql, args).fetchone()[0]

    # ---- budget holds --------------------------------------------------------------------------------

    def reserve(
        self, job_id: str, backend: str, estimate: Decimal, caps: Sequence[BudgetCap] = (), at: datetime | None = None
    ) -> int:
        """Hold `estimate` on `backend` for one call, checking every cap in the same write transaction
        (settled + open holds + this estimate <= limit). Returns the attempt id; raises `BudgetExceeded`."""
        at = at or datetime.now(UTC)
        day, month = period_key("day", at), period_key("month", at)
        want = to_nusd(estimate, round_up=True)
        with self._write() as conn:
            self._expire_possible_charges(conn)
            for cap in caps:
                if cap.backend not in (None, backend):
                    continue
                key = day if cap.period == "day" else month
                if cap.usd is not None:
                    used = self._spent_nusd(conn, cap.backend, cap.period, key)
                    if used + want > to_nusd(cap.usd):
                        raise BudgetExceeded(
                            f"budget {cap.describe()} would be exceeded: {fmt_usd(from_nusd(used))} spent or held, "
                            f"this call needs up to {fmt_usd(from_nusd(want))}",
                            job_id=job_id,
                            backend=backend,
                        )
                if cap.jobs is not None:
                    count = self._job_count(conn, cap.backend, cap.period, key)
                    counted = self._job_count(conn, cap.backend, cap.period, key, job_id)  # a retry is not a new job
                    if count + (0 if counted else 1) > cap.jobs:
                        raise BudgetExceeded(
                            f"budget {cap.describe()} reached ({count} jobs)", job_id=job_id, backend=backend
                        )
            cur = conn.execute(
                "INSERT INTO attempts(job_id, backend, state, reserved_nusd, day, month, started_at, owner) "
                "VALUES(?,?,'reserved',?,?,?,?,?)",
                (job_id, backend, want, day, month, now_ms(), self.owner),
            )
            conn.execute(
                "UPDATE jobs SET attempts=attempts+1, backend=?, updated_at=? WHERE id=?", (backend, now_ms(), job_id)
            )
            return int(cur.lastrowid)

    def settle(
        self, attempt_id: int, cost: Decimal, *, usage: dict[str, Any] | None = None, error: BaseException | None = None
    ) -> None:
        """The call returned (or failed): replace the hold by what it actually cost. An attempt settled already
        (a rerun resumed the work it paid for, and failed) keeps its bill."""
        with self._write() as conn:
            if conn.execute("SELECT state FROM attempts WHERE id=?", (attempt_id,)).fetchone()[0] != "settled":
                self._settle(conn, attempt_id, cost, usage, error)

    @staticmethod
    def _settle(
        conn: sqlite3.Connection,
        attempt_id: int,
        cost: Decimal,
        usage: dict[str, Any] | None,
        error: BaseException | None,
        call_s: float | None = None,
    ) -> None:
        conn.execute(  # a possible charge settled (its result was adopted) is no longer unknown
            "UPDATE attempts SET state='settled', cost_nusd=?, ended_at=?, usage=?, error_class=?, error=?, "
            "call_ms=?, outcome=NULL, hold_until=NULL WHERE id=?",
            (
                to_nusd(cost),
                now_ms(),
                json.dumps(usage) if usage else None,
                type(error).__name__ if error else None,
                str(error) if error else None,
                None if call_s is None else round(call_s * 1000),
                attempt_id,
            ),
        )

    def release(self, attempt_id: int, reason: str = "released") -> None:
        """Drop a hold without a bill (the call never ran)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE attempts SET state='released', ended_at=?, error=COALESCE(error, ?) "
                "WHERE id=? AND state='reserved' AND outcome IS NULL",
                (now_ms(), reason, attempt_id),
            )

    # ---- calls going out, and calls of unknown outcome -------------------------------------------------

    def call_started(self, attempt_id: int, *, hosted: bool = True) -> None:
        """The call is about to go out. Committed before returning, so after a crash the ledger knows whether this
        call may have reached the provider (a possible charge; a crash that counts towards the job's limit) or
        certainly did not (its hold is released, the job was only queued). A hosted call's mark is committed with
        a full fsync (a power cut cannot lose it: money may ride on it); a self-hosted one's like any ledger
        write (it survives a killed process)."""
        with self._write(durable=hosted) as conn:
            conn.execute(
                "UPDATE attempts SET call_started_at=?, hosted=? WHERE id=? AND state='reserved'",
                (now_ms(), int(hosted), attempt_id),
            )

    def hold_unknown(self, attempt_id: int, error: BaseException | str) -> None:
        """The request went out and its answer never came (`OutcomeUnknown`): keep the hold as a possible charge."""
        with self._write() as conn:
            self._mark_unknown(
                conn,
                attempt_id,
                type(error).__name__ if isinstance(error, BaseException) else "OutcomeUnknown",
                str(error),
            )

    def settle_unexplained(self, attempt_id: int, error: BaseException) -> None:
        """The call raised something unexpected (a bug), so what it cost is unknown: a hosted call that had gone
        out may have been billed and keeps its hold as a possible charge; any other is settled at $0. An attempt
        settled already (a rerun resumed the work it paid for) keeps its bill."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT call_started_at, hosted FROM attempts WHERE id=? AND state='reserved'", (attempt_id,)
            ).fetchone()
            if row is None:
                return
            if row["call_started_at"] is not None and row["hosted"]:
                self._mark_unknown(conn, attempt_id, type(error).__name__, str(error))
            else:
                self._settle(conn, attempt_id, Decimal(0), None, error)

    def _mark_unknown(self, conn: sqlite3.Connection, attempt_id: int, error_class: str, error: str) -> None:
        row = conn.execute("SELECT started_at, call_started_at FROM attempts WHERE id=?", (attempt_id,)).fetchone()
        since = row["call_started_at"] or row["started_at"]
        hold = self.unknown_outcome_hold_s
        conn.execute(
            "UPDATE attempts SET outcome='unknown', hold_until=?, error_class=?, error=? "
            "WHERE id=? AND state='reserved'",
            (None if hold is None else since + round(hold * 1000), error_class, error, attempt_id),
        )

    def add_possible_charges(self, attempt_id: int, count: int) -> None:
        """`count` earlier tries of this attempt's call went out, got no answer, and the backend retried: each
        may have been billed. Held as possible charges of the attempt's size (no cap check: they happened)."""
        if count <= 0:
            return
        with self._write() as conn:
            row = conn.execute("SELECT * FROM attempts WHERE id=?", (attempt_id,)).fetchone()
            for _ in range(count):
                cur = conn.execute(
                    "INSERT INTO attempts(job_id, backend, state, reserved_nusd, day, month, started_at, owner, "
                    "call_started_at, hosted) VALUES(?,?,'reserved',?,?,?,?,?,?,1)",
                    (
                        row["job_id"],
                        row["backend"],
                        row["reserved_nusd"],
                        row["day"],
                        row["month"],
                        row["started_at"],
                        self.owner,
                        row["call_started_at"] or row["started_at"],
                    ),
                )
                self._mark_unknown(
                    conn,
                    int(cur.lastrowid),
                    "OutcomeUnknown",
                    f"a try of attempt {attempt_id}'s call went out, got no answer and was retried: it may have been "
                    "billed",
                )

    def _close_holds(self, conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> tuple[int, int]:
        """Open holds (matching `where`) whose call will never report back: a hosted call that had started may
        have been billed, so its hold stays as a possible charge; any other is released at $0. Both are marked
        `Interrupted` (a call that had started and was cut off this way is what counts as a job's crash).
        Returns (released, possible charges)."""
        rows = conn.execute(
            f"SELECT id, call_started_at, hosted FROM attempts WHERE state='reserved' AND outcome IS NULL AND {where}",
            tuple(args),
        ).fetchall()
        released = possible = 0
        for r in rows:
            if r["call_started_at"] is not None and r["hosted"]:
                self._mark_unknown(
                    conn,
                    r["id"],
                    "Interrupted",
                    "the run stopped while this call was in flight: it may have been billed",
                )
                possible += 1
            else:
                why = (
                    "the run stopped before this call went out"
                    if r["call_started_at"] is None
                    else ("the run stopped during this self-hosted call (nobody bills it)")
                )
                conn.execute(
                    "UPDATE attempts SET state='released', ended_at=?, error_class='Interrupted', error=? WHERE id=?",
                    (now_ms(), why, r["id"]),
                )
                released += 1
        return released, possible

    def _expire_possible_charges(self, conn: sqlite3.Connection) -> int:
        return conn.execute(
            "UPDATE attempts SET state='released', ended_at=?, error=error || ' (possible charge dropped: "
            "unknown_outcome_hold passed)' WHERE state='reserved' AND outcome='unknown' AND hold_until IS NOT NULL "
            "AND hold_until <= ?",
            (now_ms(), now_ms()),
        ).rowcount

    def recover_orphans(self) -> OrphanHolds:
        """Settle what processes on this host that are gone (crashed) left open: holds of calls that never went
        out are released, hosted calls that were in flight become possible charges; expired possible charges
        are dropped. Their jobs stay `running` until claimed again."""
        host = socket.gethostname()
        with self._write() as conn:
            rows = conn.execute("SELECT id, owner FROM attempts WHERE state='reserved' AND outcome IS NULL").fetchall()
            released = possible = 0
            for r in rows:
                if not self._owner_alive(r["owner"], host):
                    rel, pos = self._close_holds(conn, "id=?", (r["id"],))
                    released, possible = released + rel, possible + pos
            expired = self._expire_possible_charges(conn)
        return OrphanHolds(released=released, possible_charges=possible, expired=expired)

    def release_orphans(self) -> int:
        """`recover_orphans`, as a count of the holds it dealt with."""
        return self.recover_orphans().total

    def take_over(self, attempt_ids: Sequence[int]) -> int | None:
        """A rerun finishes from what these attempts journaled (a saved answer, a submitted job): the newest one
        becomes this run's call again (its hold kept, or its bill if settled already; no new reservation and no
        cap check: the money was committed when it went out); the others' open holds are closed, their work
        billed under that one. Returns its id (None: no such attempt)."""
        if not attempt_ids:
            return None
        marks = ",".join("?" * len(attempt_ids))
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT id, state FROM attempts WHERE id IN ({marks}) ORDER BY id DESC", tuple(attempt_ids)
            ).fetchall()
            if not rows:
                return None
            keep, rest = rows[0]["id"], [r["id"] for r in rows[1:] if r["state"] != "settled"]
            if rows[0]["state"] != "settled":
                conn.execute(
                    "UPDATE attempts SET state='reserved', owner=?, outcome=NULL, hold_until=NULL, ended_at=NULL, "
                    "error_class=NULL, error=NULL WHERE id=?",
                    (self.owner, keep),
                )
            for other in rest:
                conn.execute(
                    "UPDATE attempts SET state='released', ended_at=?, outcome=NULL, hold_until=NULL, error=? "
                    "WHERE id=?",
                    (now_ms(), f"resumed and billed under attempt {keep}", other),
                )
            return int(keep)

    def _owner_alive(self, owner: str | None, host: str | None = None) -> bool:
        """Owners are `host:pid:run id[:start ticks]`. Dead: no such pid, a zombie (killed, not yet reaped: common
        in containers whose init does not reap), or the pid now belongs to a process that started later."""
        if not owner or owner == self.owner:
            return owner == self.owner
        parts = owner.split(":")
        h, pid_text = parts[0], parts[1] if len(parts) > 1 else ""
        start = parts[3] if len(parts) > 3 else None
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
            pass
        stat = proc_stat(pid)
        if stat is None:  # no /proc (not Linux): the pid exists, so assume it is the owner
            return True
        state, started = stat
        return state not in ("Z", "X") and (start is None or start == started)

    def total_spent(self, backend: str | None = None) -> Decimal:
        sql, args = f"SELECT COALESCE(SUM({HELD}), 0) FROM attempts", ()
        if backend is not None:
            sql, args = sql + " WHERE backend=?", (backend,)
        return from_nusd(self._conn().execute(sql, args).fetchone()[0])
