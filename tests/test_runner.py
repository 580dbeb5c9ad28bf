"""`editroute run` / `report` on fake backends: bad jobs fail alone, reruns are free, budgets hold, Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
import threading
from decimal import Decimal

from pipeline.cli import main
from pipeline.ledger import Ledger
from pipeline.routing import build_backends, load_policy
from pipeline.run import NullProgress, run_batch
from tests.batch_helpers import FAKE_POLICY, write_manifest, write_policy


def test_a_rerun_that_leaves_earlier_failures_is_not_ok(tmp_path):
    """Exit code 1 until every job is done: a rerun skipping last run's failures must not report success."""
    manifest = write_manifest(tmp_path, 3, corrupt={1})
    policy = load_policy(write_policy(tmp_path, FAKE_POLICY.format(latency=0.0, extra="")))
    backends = build_backends(policy)
    assert not run_batch(manifest, policy, tmp_path / "out", backends=backends).ok
    again = run_batch(manifest, policy, tmp_path / "out", backends=backends)
    assert (again.tally.failed, again.tally.skipped) == (0, 1) and not again.ok


def test_bad_jobs_fail_alone_and_a_rerun_pays_nothing(tmp_path):
    manifest = write_manifest(tmp_path, 8, corrupt={3}, missing={5})
    policy = load_policy(write_policy(tmp_path, FAKE_POLICY.format(latency=0.0, extra="")))
    backends = build_backends(policy)
    out = tmp_path / "out"
    result = run_batch(manifest, policy, out, backends=backends)
    assert [str(p) for p in result.problems] and "job05" in str(result.problems[0])
    t = result.tally
    assert (t.done, t.failed, t.reused) == (6, 1, 0)  # job05 is a manifest problem, not a run failure
    with Ledger.in_dir(out) as ledger:
        status = {r.id: r.status for r in ledger.jobs()}
        assert status["job03"] == "failed" and "not a decodable image" in ledger.get("job03").error
        assert status["job05"] == "failed" and "line 6" in ledger.get("job05").error
        assert sum(s == "done" for s in status.values()) == 6
        assert ledger.total_spent() == Decimal("0.06")
    assert (out / "job00" / "0.png").is_file() and (out / "job07" / "result.json").is_file()
    assert not (out / "job03").exists()
    assert backends["fast"].calls == 6

    again = run_batch(manifest, policy, out, backends=backends)
    assert (again.tally.done, again.tally.reused, again.tally.skipped) == (0, 6, 1)
    assert backends["fast"].calls == 6
    retry = run_batch(manifest, policy, out, backends=backends, retry_failed=True)
    assert retry.tally.failed == 1 and backends["fast"].calls == 6  # still corrupt, still no spend
    with Ledger.in_dir(out) as ledger:
        assert ledger.total_spent() == Decimal("0.06")


def test_cli_run_and_report_json_and_csv(tmp_path, capsys):
    manifest = write_manifest(tmp_path, 4, corrupt={1})
    policy = write_policy(tmp_path, FAKE_POLICY.format(latency=0.0, extra=""))
    out = tmp_path / "out"
    code = main(["run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"])
    assert code == 1  # a job failed
    report = json.loads(capsys.readouterr().out)
    assert report["jobs"]["done"] == 3 and report["jobs"]["failed"] == 1
    assert report["this_run"]["done"] == 3
    assert (
        report["failures"][0]["reason"] == "InvalidRequest" and report["failures"][0]["examples"][0]["job"] == "job01"
    )
    fast = next(b for b in report["backends"] if b["backend"] == "fast")
    assert Decimal(fast["spend_usd"]) == Decimal("0.03") and Decimal(fast["estimate_usd"]) >= Decimal("0.03")
    assert fast["p50_s"] is not None and fast["p95_s"] >= fast["p50_s"]

    assert main(["report", str(out), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (
        rows[0]["backend"] == "fast"
        and rows[0]["jobs_done"] == "3"
        and Decimal(rows[0]["spend_usd"]) == Decimal("0.03")
    )
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"]["total"] == 4
    assert main(["report", str(out)]) == 0
    assert "per backend" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_many_concurrent_jobs_never_overshoot_a_budget(tmp_path):
    extra = """
budgets:
  - {backend: fast, period: day, limit_usd: "0.05", on_exhausted: {overflow_to: spare}}
  - {backend: spare, period: day, limit_usd: "0.04", on_exhausted: stop}
"""
    manifest = write_manifest(tmp_path, 24)
    policy = load_policy(write_policy(tmp_path, FAKE_POLICY.format(latency=0.02, extra=extra)))
    result = run_batch(manifest, policy, tmp_path / "out")
    with Ledger.in_dir(tmp_path / "out") as ledger:
        assert ledger.spent("fast", "day") == Decimal("0.05")
        assert ledger.spent("spare", "day") == Decimal("0.04")
        assert ledger.counts()["done"] == 7 and result.tally.done == 7
    assert result.tally.failed == 17  # held by the budget, each with a reason


def test_stop_finishes_in_flight_jobs_and_the_rest_resume(tmp_path):
    manifest = write_manifest(tmp_path, 12)
    policy = load_policy(write_policy(tmp_path, FAKE_POLICY.format(latency=0.3, extra="")))
    stop = threading.Event()

    class StopAfterTwo(NullProgress):
        def finished(self, outcome):
            super().finished(outcome)
            if self.tally.done >= 2:
                stop.set()

    first = run_batch(manifest, policy, tmp_path / "out", progress=StopAfterTwo(), stop=stop)
    assert first.interrupted and 2 <= first.tally.done < 12
    with Ledger.in_dir(tmp_path / "out") as ledger:
        assert "running" not in ledger.counts()
        assert ledger.total_spent() == Decimal("0.01") * first.tally.done
    second = run_batch(manifest, policy, tmp_path / "out")
    assert second.tally.reused == first.tally.done and second.tally.done == 12 - first.tally.done
    with Ledger.in_dir(tmp_path / "out") as ledger:
        assert ledger.counts() == {"done": 12} and ledger.total_spent() == Decimal("0.12")


def test_a_misconfigured_backend_is_dropped_for_the_run_and_jobs_fall_back(tmp_path):
    from backends.errors import BackendMisconfigured

    def no_key(request):
        raise BackendMisconfigured("no API key: set OPENAI_API_KEY")

    manifest = write_manifest(tmp_path, 30)
    policy = load_policy(write_policy(tmp_path, FAKE_POLICY.format(latency=0.0, extra="")))
    backends = build_backends(policy)
    backends["fast"].handler = no_key
    result = run_batch(manifest, policy, tmp_path / "out", backends=backends)
    assert result.tally.done == 30  # every job on the fallback
    assert 1 <= backends["fast"].calls <= 16 < 30  # only jobs already under way (the 16-job window) tried it
    with Ledger.in_dir(tmp_path / "out") as ledger:
        assert {r.backend for r in ledger.jobs()} == {"spare"} and ledger.total_spent() == Decimal("0.60")


def test_report_counts_a_job_that_failed_before_any_call_where_it_was_routed(tmp_path):
    from backends.errors import BackendMisconfigured
    from pipeline.run import build_report

    def no_key(request):
        raise BackendMisconfigured("no API key: set OPENAI_API_KEY")

    alone = FAKE_POLICY.format(latency=0.0, extra="").replace("fallbacks:\n  fast: [spare]\n", "")
    policy = load_policy(write_policy(tmp_path, alone))
    backends = build_backends(policy)
    backends["fast"].handler = no_key
    result = run_batch(write_manifest(tmp_path, 30), policy, tmp_path / "out", backends=backends)
    assert result.tally.failed == 30 and backends["fast"].calls < 30  # later jobs never called it
    with Ledger.in_dir(tmp_path / "out") as ledger:
        report = build_report(ledger)
    assert {b["backend"]: b["jobs_failed"] for b in report["backends"]} == {"fast": 30}
