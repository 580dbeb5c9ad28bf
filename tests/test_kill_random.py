"""kill -9 at random moments, 5 times, then plain reruns (the suite's cut of `benchmarks/kill_test.py`, which runs
20): nothing lost, nothing half-written, no answer that had arrived paid again, the API's bill within the budget,
no temp file left, and no job that never reached the API waiting for --retry-failed."""

from __future__ import annotations

from decimal import Decimal

from benchmarks.kill_test import run_kill_test


def test_random_kills_cost_nothing_that_was_paid_for_and_never_pass_the_budget(tmp_path):
    # The budget admits every job plus some of the calls the kills cut off (each may be billed): it binds late.
    # Grace: an answer delivered less than 100 ms before its kill may not have left the socket for the disk on a
    # loaded 2-core box (the double-pay window; test_crash_truth pins that the journal closes it deterministically).
    report = run_kill_test(tmp_path, kills=5, jobs=30, latency=0.3, cap=Decimal("0.50"), seed=7, grace_ms=100)
    assert report.kills == 5 and report.ok, "\n".join(report.lines())
    assert report.done + report.refused_by_budget == 30 and report.done >= 10 and report.answers_delivered >= 10
