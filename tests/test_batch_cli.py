"""The batch lane on the command line: `plan --explain` names the lane and what it saves per job, `bench cost` has the
Batch rows, Ctrl-C on `editroute run` cancels upstream and keeps what finished, and `editroute batch status|cancel`
work on a folder whose run was killed."""

from __future__ import annotations

import json
import signal
from decimal import Decimal

import pytest

from backends.pricing import load_prices
from backends.standins import FakeOpenAIServer
from pipeline.bench import CostOptions, build_report, headline
from pipeline.cli import main
from tests.crash_helpers import STANDIN_KEY, editroute_run, finish, kill, statuses, wait_for
from tests.crash_helpers import ledger_rows as rows
from tests.lane_helpers import line_bills, result_of, write_jobs, write_policy


@pytest.fixture
def api():
    with FakeOpenAIServer(api_key=STANDIN_KEY) as srv:
        yield srv


def test_plan_explain_names_the_lane_and_the_saving_per_job(tmp_path, capsys):
    manifest = write_jobs(tmp_path, 3)
    manifest.write_text(
        manifest.read_text().replace('"deadline": "24h", ', "", 1).replace(', "deadline": "24h"}', "}", 1)
    )
    policy = write_policy(tmp_path, "http://127.0.0.1:9/v1")
    assert main(["plan", str(manifest), "--policy", str(policy), "--explain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "j0000 -> api $" in out and "has no deadline (urgent" in out
    for job in ("j0001", "j0002"):
        assert f"{job} -> api-batch $" in out
    assert out.count("batch lane api-batch saves $0.0034 vs api: $0.0034 instead of $0.0068 (synchronous") == 2
    assert "batch lanes: $0.0068 for 2 jobs that can wait, $0.0137 synchronously: saves $0.0068" in out
    assert main(["plan", str(manifest), "--policy", str(policy), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    lane = plan["batch_lane"]
    assert lane["jobs"] == 2 and lane["lane_only"] == 0
    assert Decimal(lane["synchronous_usd"]) == 2 * Decimal(lane["usd"]) == 2 * Decimal(lane["saves_usd"])
    saving = {d["id"]: d.get("batch_saving") for d in plan["decisions"]}
    usd = {d["id"]: Decimal(d["usd"]) for d in plan["decisions"]}
    assert saving["j0000"] is None and saving["j0001"]["vs"] == "api"
    assert Decimal(saving["j0001"]["saves_usd"]) == usd["j0001"]  # half of what j0000 costs synchronously
    assert abs(usd["j0001"] * 2 - usd["j0000"]) <= Decimal("0.000001")  # (JSON rounds to the micro-dollar)


def test_bench_cost_has_batch_rows_at_half_the_price(tmp_path):
    report = build_report(CostOptions(results_path=tmp_path / "none.md"))
    batch = {(r.backend, r.tier, r.size): r for r in report.per_image if r.scenario.startswith("Batch API")}
    api = {(r.backend, r.tier, r.size): r for r in report.per_image if r.scenario == "API"}
    live = [m for m, p in load_prices().models.items() if p.status == "live" and p.snapshot_of is None]
    assert {k[0] for k in batch} == set(live)  # every live model; not the retired baseline
    for k, row in batch.items():
        assert row.total_usd * 2 == api[k].total_usd
    assert "inferred" in batch[("gpt-image-2.6-sunburst", "high", "1024x1024")].basis
    assert "inferred" not in batch[("gpt-image-2", "high", "1024x1024")].basis  # its Batch row is published
    assert (
        headline(report)["gpt-image-2 via the Batch API, with input tokens"] * 2
        == headline(report)["gpt-image-2 with input tokens"]
    )
    assert any(p.name == "gpt-image-2 via the Batch API" for p in report.plans["high"])


def _in_progress(api: FakeOpenAIServer, done: int) -> bool:
    return bool(api.batches) and api.batches[api.batch_order[0]]["request_counts"]["completed"] >= done


def test_ctrl_c_cancels_the_batch_upstream_and_keeps_what_finished(api, tmp_path):
    api.batch_line_s = 0.05
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, 30), write_policy(tmp_path, api.base_url)
    proc = editroute_run(manifest, policy, out)
    wait_for(lambda: _in_progress(api, 3), proc, why="the batch to be half-way")
    proc.send_signal(signal.SIGINT)
    code, report, err = finish(proc)
    assert code == 130, err
    batch = api.batches[api.batch_order[0]]
    assert batch["status"] == "cancelled"
    done = [j for j, s in statuses(out).items() if s == "done"]
    assert len(done) == batch["request_counts"]["completed"] and report["this_run"]["interrupted"]
    assert sorted(line_bills(api)) == sorted(done)
    assert report["batches"][0]["status"] == "cancelled"


def test_batch_cancel_and_status_after_the_run_was_killed(api, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", STANDIN_KEY)
    api.batch_line_s = 0.05
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, 30), write_policy(tmp_path, api.base_url)
    proc = editroute_run(manifest, policy, out)
    wait_for(lambda: _in_progress(api, 3), proc, why="the batch to be half-way")
    kill(proc)
    assert main(["batch", "status", str(out), "--json"]) == 0  # asks the API: the batch goes on without the run
    [live] = json.loads(capsys.readouterr().out)["batches"]
    assert live["batch_id"] == api.batch_order[0] and live["status"] == "in_progress" and live["completed"] >= 3
    assert main(["batch", "cancel", str(out), "--wait", "20"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    batch = api.batches[api.batch_order[0]]
    finished = batch["request_counts"]["completed"]
    assert batch["status"] == "cancelled" and f"{finished} line(s) answered" in said
    assert f"{30 - finished} hold(s) of lines that never ran released" in said
    charged = sum(b for _, _, b in api.batch_bills)
    assert main(["batch", "status", str(out), "--offline", "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)["batches"]
    assert status["status"] == "cancelled" and Decimal(status["charged_usd"]) == charged
    [(spent,)] = rows(out, "SELECT SUM(cost_nusd) FROM attempts WHERE state='settled'")
    assert Decimal(spent) / 10**9 == charged  # the answered lines are billed in the ledger already
    api.batch_line_s = 0
    code, _, err = finish(editroute_run(manifest, policy, out))  # the rerun writes them and sends the rest again
    assert code == 0, err
    assert set(statuses(out).values()) == {"done"} and len(api.batch_order) == 2
    assert all(len(v) == 1 for v in line_bills(api).values()) and len(line_bills(api)) == 30
    for job in statuses(out):
        assert Decimal(result_of(out, job)["cost_usd"]) == line_bills(api)[job][0]
    assert main(["report", str(out)]) == 0
    assert "batches (OpenAI Batch API)" in capsys.readouterr().out
