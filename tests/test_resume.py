"""kill -9 a running `editroute run` mid-batch, run it again: zero jobs lost, zero paid twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from pipeline.ledger import Ledger
from pipeline.run import build_report
from tests.batch_helpers import BLOCK_ENV, write_manifest, write_policy

ROOT = Path(__file__).resolve().parents[1]

POLICY = """
backends:
  billed:
    kind: billing
    cost_per_image: "0.01"
    latency_s: 0.05
    billing_file: {bill}
quality: {{billed: 0.8}}
"""

# `editroute run` itself, with one extra backend kind registered (a fake that writes what it would bill).
LAUNCH = (
    "import sys, backends.registry as r; r.BACKEND_KINDS['billing'] = 'tests.batch_helpers:BillingBackend'; "
    "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
)


def editroute_run(manifest: Path, policy: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def done_count(out: Path) -> int:
    try:
        conn = sqlite3.connect(out / "editroute.db", timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM jobs WHERE status='done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_mid_batch_then_rerun_loses_nothing_and_pays_nothing_twice(tmp_path):
    jobs = 10
    manifest = write_manifest(tmp_path, jobs)
    bill = tmp_path / "bill.txt"
    policy = write_policy(tmp_path, POLICY.format(bill=bill))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), BLOCK_ENV: "4"}  # calls after the 4th hang until killed

    proc = editroute_run(manifest, policy, out, env)
    deadline = time.monotonic() + 60
    while done_count(out) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never got 4 jobs done"
        time.sleep(0.05)
    time.sleep(0.2)  # let the next calls start (and hang) so the kill lands mid-call
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with Ledger.in_dir(out) as ledger:
        statuses = Counter(r.status for r in ledger.jobs())
        assert statuses["done"] == 4 and statuses["running"] >= 1  # killed with calls in flight
        report = build_report(ledger)  # the dead run's open holds are shown as held, not as spend
        assert Decimal(report["spend_usd"]) == Decimal("0.04") and Decimal(report["held_usd"]) >= Decimal("0.01")
        in_flight = sum(a["state"] == "reserved" and a["call_started_at"] is not None for a in ledger.attempts())
    assert in_flight >= 1
    paid_before = bill.read_text().split()
    assert len(paid_before) == 4

    env.pop(BLOCK_ENV)
    proc = editroute_run(manifest, policy, out, env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr

    billed = Counter(bill.read_text().split())
    assert sorted(billed) == [f"job{i:02d}" for i in range(jobs)]  # every job paid for...
    assert set(billed.values()) == {1}  # ...exactly once
    with Ledger.in_dir(out) as ledger:
        assert ledger.counts() == {"done": jobs}
        report = build_report(ledger)
        assert Decimal(report["spend_usd"]) == Decimal("0.01") * jobs  # billed: what one uninterrupted run costs
        # the calls the kill cut off may have been billed (a provider bills what it generated): counted apart
        assert report["unknown_outcome"] == {"calls": in_flight, "up_to_usd": str(Decimal("0.01") * in_flight)}
        assert ledger.total_spent() == Decimal("0.01") * (jobs + in_flight)  # what budgets count
        for rec in ledger.jobs():
            assert rec.cost == Decimal("0.01")
            assert sum(a["state"] == "settled" and a["error_class"] is None for a in ledger.attempts(rec.id)) == 1
            assert all((out / o["path"]).is_file() for o in rec.outputs)
    leftovers = [p for p in out.rglob("*.tmp")]
    assert leftovers == []  # nothing half-written is left where a reader would look


def test_ctrl_c_lets_in_flight_calls_finish_and_the_rerun_completes(tmp_path):
    manifest = write_manifest(tmp_path, 16)
    bill = tmp_path / "bill.txt"
    policy = write_policy(tmp_path, POLICY.format(bill=bill).replace("latency_s: 0.05", "latency_s: 0.3"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = editroute_run(manifest, policy, out, env)
    deadline = time.monotonic() + 60
    while done_count(out) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopping" in stderr
    with Ledger.in_dir(out) as ledger:
        counts = ledger.counts()
        assert "running" not in counts and counts["done"] < 16  # stopped early, nothing left half-way
        assert ledger.total_spent() == Decimal("0.01") * counts["done"]  # no hold left behind
    proc = editroute_run(manifest, policy, out, env)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    billed = Counter(bill.read_text().split())
    assert len(billed) == 16 and set(billed.values()) == {1}
    with Ledger.in_dir(out) as ledger:
        assert ledger.counts() == {"done": 16} and ledger.total_spent() == Decimal("0.16")
