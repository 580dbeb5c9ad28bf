"""The SQLite ledger: schema, budget holds that concurrent workers cannot overshoot, job claims across crashes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from backends.errors import BackendUnavailable, BudgetExceeded, InvalidRequest
from pipeline.ledger import MIGRATIONS, BudgetCap, Ledger


def dead_owner() -> str:
    """The owner string of a process that has exited (its pid is no longer in use)."""
    import socket

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{socket.gethostname()}:{proc.stdout.strip()}:deadbeef"


def test_schema_is_versioned_wal_and_reopens(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        conn = sqlite3.connect(ledger.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
        assert {"jobs", "attempts", "reservations", "spend_daily", "spend_monthly"} <= tables
        conn.close()
    with Ledger.in_dir(tmp_path) as again:  # reopening does not re-run migrations
        assert again.schema_version == len(MIGRATIONS)
    conn = sqlite3.connect(tmp_path / "editroute.db")
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this editroute"):
        Ledger.in_dir(tmp_path)


def test_holds_count_as_spend_until_settled_and_money_stays_exact(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.claim("j1", "k1", "k1")
        a = ledger.reserve("j1", "api", Decimal("0.25"))
        assert ledger.spent("api", "day") == Decimal("0.25")
        assert ledger.spent(None, "month") == Decimal("0.25")
        assert ledger.job_count("api", "month") == 1
        ledger.settle(a, Decimal("0.0000025"))  # $2.50 per 1M tokens x 1 token
        for _ in range(3):
            b = ledger.reserve("j1", "api", Decimal("1"))
            ledger.settle(b, Decimal("0.0000025"))
        assert ledger.spent("api", "day") == Decimal("0.00001")
        assert ledger.spent("sdxl", "day") == 0
        c = ledger.reserve("j1", "sdxl", Decimal("5"))
        ledger.release(c)
        assert ledger.spent(None, "day") == Decimal("0.00001")
        # another month has its own spend
        assert ledger.spent("api", "month", datetime(2001, 1, 1, tzinfo=UTC)) == 0


def test_reservation_refuses_what_would_pass_a_cap(tmp_path):
    cap = BudgetCap("api", "day", usd=Decimal("1.00"))
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.claim("j", "k", "k")
        ledger.reserve("j", "api", Decimal("0.60"), [cap])
        with pytest.raises(BudgetExceeded, match=r"\$1.00 per day on backend 'api'"):
            ledger.reserve("j", "api", Decimal("0.50"), [cap])
        ledger.reserve("j", "sdxl", Decimal("5"), [cap])  # the cap is for another backend
        jobs_cap = [BudgetCap(None, "month", jobs=2)]
        ledger.reserve("j", "sdxl", Decimal("0"), jobs_cap)  # a retry of a counted job is not a new job
        ledger.reserve("k", "sdxl", Decimal("0"), jobs_cap)
        with pytest.raises(BudgetExceeded, match="2 jobs per month"):
            ledger.reserve("m", "sdxl", Decimal("0"), jobs_cap)


def test_concurrent_threads_never_overshoot_a_cap(tmp_path):
    cap = BudgetCap(None, "day", usd=Decimal("1.00"))
    ledger = Ledger.in_dir(tmp_path)
    granted, refused = [], []
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(5):
            try:
                granted.append(ledger.reserve(f"job{i}-{j}", "api", Decimal("0.07"), [cap]))
            except BudgetExceeded:
                refused.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 14  # floor(1.00 / 0.07)
    assert ledger.spent(None, "day") == Decimal("0.98")
    ledger.close()


def _reserve_many(path: str, n: int, out) -> None:
    ledger = Ledger(path)
    ok = 0
    for j in range(n):
        try:
            ledger.reserve(f"p-{j}", "api", Decimal("0.10"), [BudgetCap("api", "month", usd=Decimal("2.00"))])
            ok += 1
        except BudgetExceeded:
            pass
    out.put(ok)


def test_concurrent_processes_never_overshoot_a_cap(tmp_path):
    path = str(tmp_path / "editroute.db")
    Ledger(path).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(path, 15, out)) for _ in range(3)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join()
    assert total == 20
    with Ledger(path) as ledger:
        assert ledger.spent("api", "month") == Decimal("2.00")


def test_complete_returns_everything_billed_for_the_job(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.claim("g", "kg", "kg")
        ledger.settle(ledger.reserve("g", "gpu", Decimal("0.05")), Decimal("0.02"), error=BackendUnavailable("oom"))
        cost = ledger.complete(
            "g", backend="api", outputs=[], cost=Decimal("0.1"), attempt_id=ledger.reserve("g", "api", Decimal("0.3"))
        )
        assert cost == Decimal("0.12") == ledger.get("g").cost


def test_claims_skip_done_and_failed_and_retry_a_crashed_job_once(tmp_path):
    with Ledger.in_dir(tmp_path) as ledger:
        assert ledger.claim("a", "ka", "ka").action == "run"
        held = ledger.reserve("a", "api", Decimal("0.3"))
        assert ledger.complete(
            "a", backend="api", outputs=[{"path": "a/0.png", "sha256": "x"}], cost=Decimal("0.1"), attempt_id=held
        ) == Decimal("0.1")
        assert ledger.get("a").cost == Decimal("0.1") and ledger.get("a").status == "done"
        assert ledger.claim("a", "ka", "ka").action == "done"
        assert ledger.claim("b", "kb", "kb").action == "run"
        ledger.fail("b", InvalidRequest("bad"))
        assert ledger.claim("b", "kb", "kb").action == "failed"
        assert ledger.claim("b", "kb", "kb", retry_failed=True).action == "run"
        assert ledger.claim("b", "kb", "kb").action == "busy"  # this run holds it
        # same inputs under another id
        dup = ledger.claim("a2", "ka", "ka")
        assert dup.action == "duplicate" and dup.record.id == "a"
        with pytest.raises(InvalidRequest, match="idempotency key reused"):
            ledger.claim("z", "ka", "other-body")

    ghost = dead_owner()
    with Ledger.in_dir(tmp_path, owner=ghost) as crashed:
        crashed.claim("c", "kc", "kc")
        crashed.call_started(crashed.reserve("c", "api", Decimal("0.5")))  # in flight when the run died
        crashed.claim("q", "kq", "kq")
        crashed.reserve("q", "api", Decimal("0.2"))  # queued behind it: never sent
    with Ledger.in_dir(tmp_path) as ledger:
        assert ledger.spent("api", "day") == Decimal("0.8")  # the dead run's holds still count
        claim = ledger.claim("c", "kc", "kc")
        assert claim.action == "run" and claim.recovered and claim.record.crashes == 1
        assert ledger.claim("q", "kq", "kq").record.crashes == 0  # only queued: not a crash
        # the call in flight may have been billed: its hold stays (a possible charge); the queued one's is gone
        assert ledger.spent("api", "day") == Decimal("0.6")
    again = dead_owner()
    with Ledger.in_dir(tmp_path, owner=again) as crashed_again:
        crashed_again._conn().execute("UPDATE jobs SET owner=? WHERE id IN ('c', 'q')", (again,))
        crashed_again.call_started(crashed_again.reserve("c", "api", Decimal("0.5")))
        crashed_again.reserve("q", "api", Decimal("0.2"))
    with Ledger.in_dir(tmp_path) as ledger:
        claim = ledger.claim("c", "kc", "kc")
        assert claim.action == "failed" and "crash 2 times" in claim.record.error
        assert ledger.claim("q", "kq", "kq").action == "run"  # queued at both crashes, never sent: runs
        # a verified result or a journaled answer on disk costs nothing to finish: taken whatever the count
        assert ledger.claim("c", "kc", "kc", paid_on_disk=True).action == "run"


def test_orphaned_holds_are_released_and_interrupt_marks_jobs(tmp_path):
    with Ledger.in_dir(tmp_path, owner=dead_owner()) as crashed:
        crashed.claim("x", "kx", "kx")
        crashed.reserve("x", "api", Decimal("3"))
    with Ledger.in_dir(tmp_path) as ledger:
        ledger.claim("y", "ky", "ky")
        ledger.reserve("y", "api", Decimal("1"))
        assert ledger.release_orphans() == 1  # ours is alive and kept
        assert ledger.spent("api", "day") == Decimal("1")
        assert ledger.interrupt() == 1
        assert ledger.get("y").status == "interrupted"
        assert ledger.spent("api", "day") == 0
        assert ledger.claim("y", "ky", "ky").action == "run"  # an interrupted job resumes


def test_an_older_ledger_is_migrated_in_place(tmp_path):
    path = tmp_path / "editroute.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO jobs(id, idempotency_key, request_hash, status, created_at, updated_at) "
        "VALUES('old', 'k', 'k', 'done', 1, 1)"
    )
    conn.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS) >= 2
        assert ledger.get("old").status == "done"
        ledger.claim("new", "k2", "k2")
        attempt = ledger.reserve("new", "api", Decimal("0.01"))
        ledger.complete("new", backend="api", outputs=[], cost=Decimal("0.01"), attempt_id=attempt, call_s=0.25)
        assert ledger.attempts("new")[0]["call_ms"] == 250


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies and start times are read from /proc")
def test_a_killed_but_unreaped_run_and_a_recycled_pid_count_as_crashed(tmp_path):
    import os
    import signal
    import socket
    import time

    code = (
        "import sys, time; from decimal import Decimal; from pipeline.ledger import Ledger; "
        "l = Ledger(sys.argv[1]); l.claim('z', 'kz', 'kz'); l.reserve('z', 'api', Decimal('2')); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "editroute.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGKILL)
        while open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":  # killed, not reaped
            time.sleep(0.01)
        with Ledger.in_dir(tmp_path) as ledger:
            assert ledger.release_orphans() == 1 and ledger.spent("api", "day") == 0
            claim = ledger.claim("z", "kz", "kz")
            assert claim.action == "run" and claim.recovered
    finally:
        proc.wait()
    # a live pid that started after the owner did is someone else: the owner is gone
    recycled = f"{socket.gethostname()}:{os.getppid()}:cafe0000:1"
    with Ledger.in_dir(tmp_path, owner=recycled) as gone:
        gone.claim("r", "kr", "kr")
    with Ledger.in_dir(tmp_path) as ledger:
        assert ledger.claim("r", "kr", "kr").recovered
