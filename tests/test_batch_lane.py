"""The batch lane end to end against the loopback stand-in's Batch API: `run_batch` gathers jobs that can wait into
batches (one for 1,000 jobs; split at `max_requests_per_batch`), writes every output as the synchronous path does,
billed from each line's usage at Batch rates; failed lines take the policy's fallbacks, an expired batch sends
again only the lines that did not run, and a stop cancels upstream and keeps what finished."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from PIL import Image

from backends.pricing import load_prices, token_cost
from backends.standins import FakeOpenAIServer
from pipeline.ledger import Ledger
from pipeline.run import build_report, run_batch
from tests.crash_helpers import STANDIN_KEY, statuses
from tests.crash_helpers import ledger_rows as rows
from tests.lane_helpers import line_bills, result_of, write_jobs, write_policy


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", STANDIN_KEY)


@pytest.fixture
def api(key):
    with FakeOpenAIServer(api_key=STANDIN_KEY) as srv:
        yield srv


def sync_price(usage: dict) -> Decimal:
    """What the synchronous API would bill for this usage (gpt-image-2's standard rates)."""
    return token_cost(
        load_prices().models["gpt-image-2"],
        text_in=usage["input_text_tokens"],
        image_in=usage["input_image_tokens"],
        image_out=usage.get("output_image_tokens", usage["output_tokens"]),
    )


def test_a_thousand_jobs_become_one_batch_at_half_price(api, tmp_path):
    out = tmp_path / "out"
    result = run_batch(write_jobs(tmp_path, 1000), write_policy(tmp_path, api.base_url), out)
    assert result.ok and result.tally.done == 1000
    assert len(api.batch_creates) == 1 and api.batches[api.batch_order[0]]["request_counts"]["total"] == 1000
    uploads = [r.fields.get("purpose") for r in api.requests if r.path.endswith("/files") and r.method == "POST"]
    assert sorted(uploads) == ["batch", "vision", "vision"]  # the shared image and mask went up once
    bills = line_bills(api)
    total = Decimal(0)
    for i in (0, 1, 499, 998, 999):  # every job is checked for its bill below; these for their files as well
        job = f"j{i:04d}"
        data = result_of(out, job)
        assert data["backend"] == "api-batch" and data["extras"]["batch_id"] == api.batch_order[0]
        with Image.open(out / data["outputs"][0]["path"]) as img:
            assert img.format == "JPEG" and img.size == (1024, 640)
    for job_id, status in statuses(out).items():
        data = result_of(out, job_id)
        cost = Decimal(data["cost_usd"])
        assert status == "done" and bills[job_id] == [cost]  # billed once, to the nano-dollar
        assert cost * 2 == sync_price(data["usage"])  # half the synchronous price
        total += cost
    with Ledger.in_dir(out) as ledger:
        report = build_report(ledger)
    assert Decimal(report["spend_usd"]) == total == sum(b for _, _, b in api.batch_bills)
    [batch] = report["batches"]
    assert batch["status"] == "completed" and batch["lines"] == 1000 and Decimal(batch["charged_usd"]) == total
    assert not (out / ".batches").exists() or not any((out / ".batches").iterdir())  # files removed once used


def test_batches_split_at_max_requests_per_batch(api, tmp_path):
    out = tmp_path / "out"
    result = run_batch(write_jobs(tmp_path, 25), write_policy(tmp_path, api.base_url, max_requests=10), out)
    assert result.ok
    sizes = sorted(b["request_counts"]["total"] for b in api.batches.values())
    assert sizes == [5, 10, 10] and sum(len(v) for v in line_bills(api).values()) == 25


def test_input_files_split_at_max_bytes_and_data_urls_travel_inline(api, tmp_path):
    out = tmp_path / "out"
    policy = write_policy(tmp_path, api.base_url, upload="data_url", extra="")
    policy.write_text(
        policy.read_text().replace(
            "    image_upload: data_url", "    image_upload: data_url\n    max_bytes_per_file: 4096"
        )
    )
    assert run_batch(write_jobs(tmp_path, 6), policy, out).ok
    assert not [r for r in api.requests if r.path.endswith("/files") and r.fields.get("purpose") == "vision"]
    inputs = [api.files[b["input_file_id"]]["content"] for b in api.batches.values()]
    assert all(len(c) <= 4096 for c in inputs) and len(inputs) >= 2  # ~1 KB a line with its data URLs
    assert sum(c.count(b"\n") for c in inputs) == 6
    assert all(b'"image_url":"data:image/png;base64,' in c for c in inputs)
    assert sorted(line_bills(api)) == sorted(statuses(out)) and len(statuses(out)) == 6


def test_uploads_are_reused_across_runs_while_the_provider_has_them(key, tmp_path):
    out = tmp_path / "out"
    with FakeOpenAIServer(api_key=STANDIN_KEY) as first:
        assert run_batch(write_jobs(tmp_path, 2), write_policy(tmp_path, first.base_url), out).ok
        more = write_jobs(tmp_path, 4)  # same images, two new jobs
        assert run_batch(more, write_policy(tmp_path, first.base_url), out).ok
        purposes = [r.fields.get("purpose") for r in first.requests if r.path.endswith("/files") and r.method == "POST"]
        assert purposes.count("vision") == 2  # the image and the mask, once for both runs
    with FakeOpenAIServer(api_key=STANDIN_KEY) as second:  # an account that never saw those files
        again = write_jobs(tmp_path / "x", 2, prompt="another backdrop")
        assert run_batch(again, write_policy(tmp_path, second.base_url), out).ok
        purposes = [
            r.fields.get("purpose") for r in second.requests if r.path.endswith("/files") and r.method == "POST"
        ]
        assert purposes.count("vision") == 2  # checked (GET /files/{id}: 404) and uploaded afresh


def test_urgent_jobs_go_synchronously_beside_the_batch(api, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "a").mkdir()
    write_jobs(tmp_path / "a", 2, deadline=None, prompt="urgent backdrop")
    manifest = write_jobs(tmp_path, 3)
    urgent = (tmp_path / "a" / "jobs.jsonl").read_text().replace("img/", "a/img/").replace('"j00', '"u00')
    manifest.write_text(manifest.read_text() + urgent)
    assert run_batch(manifest, write_policy(tmp_path, api.base_url), out).ok
    backends = {j: result_of(out, j)["backend"] for j in statuses(out)}
    assert backends == {
        "j0000": "api-batch",
        "j0001": "api-batch",
        "j0002": "api-batch",
        "u0000": "api",
        "u0001": "api",
    }
    assert len(api.edit_requests) == 2 and len(api.batch_bills) == 3


def test_failed_lines_take_fallbacks_or_fail_with_the_reason(api, tmp_path):
    out = tmp_path / "out"
    manifest = write_jobs(tmp_path, 4)
    text = (
        manifest.read_text()
        .replace("for j0001", "for j0001 batch-fail-test")
        .replace("for j0002", "moderation-test j0002")
    )
    manifest.write_text(text)
    result = run_batch(manifest, write_policy(tmp_path, api.base_url), out)
    assert statuses(out) == {"j0000": "done", "j0001": "done", "j0002": "failed", "j0003": "done"}
    moved = result_of(out, "j0001")  # a 500 in the error file: the policy's fallback (the synchronous API)
    assert moved["backend"] == "api" and [a["backend"] for a in moved["attempts"]] == ["api-batch", "api"]
    assert "batch line 'j0001'" in moved["attempts"][0]["error"] and moved["attempts"][0]["cost_usd"] == "0"
    assert Decimal(moved["cost_usd"]) == sync_price(moved["usage"])
    [(error,)] = rows(out, "SELECT error FROM jobs WHERE id='j0002'")  # refused by moderation: no fallback helps
    assert "safety system" in error and "batch line 'j0002'" in error
    assert result.tally.failed == 1 and sorted(line_bills(api)) == ["j0000", "j0003"]


def test_expiry_sends_again_only_the_lines_that_did_not_run(api, tmp_path):
    api.batch_expire_after = 3
    out = tmp_path / "out"
    result = run_batch(write_jobs(tmp_path, 6, deadline="2d"), write_policy(tmp_path, api.base_url), out)
    assert result.ok and result.tally.done == 6
    first, second = (api.batches[b] for b in api.batch_order)
    assert first["status"] == "expired" and first["request_counts"]["completed"] == 3
    assert second["status"] == "completed" and second["request_counts"]["total"] == 3
    assert all(len(v) == 1 for v in line_bills(api).values()) and len(line_bills(api)) == 6  # each billed once
    batch_of = {j: result_of(out, j)["extras"]["batch_id"] for j in statuses(out)}
    assert Counter(batch_of.values()) == {api.batch_order[0]: 3, api.batch_order[1]: 3}
    states = dict(rows(out, "SELECT custom_id || '@' || batch, state FROM batch_lines"))
    assert sorted(states.values()) == ["completed"] * 6 + ["requeued"] * 3


def test_expiry_past_the_deadline_takes_the_fallback(api, tmp_path):
    api.batch_expire_after = 1
    out = tmp_path / "out"
    assert run_batch(write_jobs(tmp_path, 3, deadline="24h"), write_policy(tmp_path, api.base_url), out).ok
    backends = Counter(result_of(out, j)["backend"] for j in statuses(out))
    assert backends == {"api-batch": 1, "api": 2} and len(api.batch_creates) == 1  # no second window fits


def test_stop_cancels_upstream_and_keeps_what_finished(api, tmp_path):
    api.batch_line_s = 0.05
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, 30), write_policy(tmp_path, api.base_url)
    stop = threading.Event()
    done: list = []
    runner = threading.Thread(target=lambda: done.append(run_batch(manifest, policy, out, stop=stop)))
    runner.start()
    deadline = time.monotonic() + 30
    while not api.batches or api.batches[api.batch_order[0]]["request_counts"]["completed"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stop.set()
    runner.join(60)
    [result] = done
    batch = api.batches[api.batch_order[0]]
    assert result.interrupted and batch["status"] == "cancelled"
    finished = batch["request_counts"]["completed"]
    counts = Counter(statuses(out).values())
    assert counts == {"done": finished, "interrupted": 30 - finished} and result.tally.done == finished
    held = rows(out, "SELECT COUNT(*) FROM attempts WHERE state='reserved'")[0][0]
    assert held == 0  # lines that never ran hold nothing: not billed
    api.batch_line_s = 0
    again = run_batch(manifest, policy, out)  # a rerun sends the rest in a new batch
    assert again.ok and again.tally.done == 30 - finished and again.tally.reused == finished
    assert sorted(line_bills(api)) == sorted(statuses(out)) and all(len(v) == 1 for v in line_bills(api).values())


def test_a_batch_jobs_latency_is_the_batchs_turnaround(key, tmp_path):
    """`report`'s p50/p95 of a batch lane say how long its jobs waited for their batch, not how long a line took
    to read back (which is ~0 and would make the lane look faster than any synchronous call)."""
    with FakeOpenAIServer(api_key=STANDIN_KEY, batch_delay_s=1.0) as api:
        out = tmp_path / "out"
        assert run_batch(write_jobs(tmp_path, 3), write_policy(tmp_path, api.base_url), out).ok
    for job_id in statuses(out):
        assert result_of(out, job_id)["timings"]["total_s"] >= 1.0
    with Ledger.in_dir(out) as ledger:
        [lane] = [b for b in build_report(ledger)["backends"] if b["backend"] == "api-batch"]
    assert lane["p50_s"] >= 1.0
