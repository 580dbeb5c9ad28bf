"""Spend and budget holds: what the router reads (`spent`, `job_count`) and how calls hold and settle money.

A call reserves its estimate (`reserve`, checking every cap in the same `BEGIN IMMEDIATE` transaction, so
concurrent workers never overshoot), then settles what it actually cost (`settle`) or drops the hold
(`release`); holds left by a process that died are released on the next run (`release_orphans`).
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
from pipeline.ledger.schema import HELD, BudgetCap, fmt_usd, from_nusd, now_ms, to_nusd
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

    if TYPE_CHECKING:  # provided by Ledger

        def _conn(self) -> sqlite3.Connection: ...

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

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
        """The call returned (or failed): replace the hold by what it actually cost."""
        with self._write() as conn:
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
        conn.execute(
            "UPDATE attempts SET state='settled', cost_nusd=?, ended_at=?, usage=?, error_class=?, error=?, "
            "call_ms=? WHERE id=?",
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
                "WHERE id=? AND state='reserved'",
                (now_ms(), reason, attempt_id),
            )

    def release_orphans(self) -> int:
        """Release holds left by processes on this host that are gone (crashed): they block budgets otherwise.
        A call that was billed upstream but never returned cannot be known; it is not counted."""
        host = socket.gethostname()
        with self._write() as conn:
            rows = conn.execute("SELECT id, owner FROM attempts WHERE state='reserved'").fetchall()
            dead = [r["id"] for r in rows if not self._owner_alive(r["owner"], host)]
            for attempt_id in dead:
                conn.execute(
                    "UPDATE attempts SET state='released', ended_at=?, error_class='Interrupted', "
                    "error='the process holding this call stopped' WHERE id=?",
                    (now_ms(), attempt_id),
                )
        return len(dead)

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
