"""kill -9 of a real `editroute run` with a batch lane, at named moments (`tests.crash_hooks`) and at random ones,
against the loopback stand-in's Batch API: a plain rerun never creates a second batch for the same jobs, finds a
batch whose creation was not recorded by its metadata, resumes polling, and loses nothing: every job done, each
billed once, the ledger's spend what the stand-in billed."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from backends.standins import FakeOpenAIServer
from tests.crash_helpers import STANDIN_KEY, editroute_run, finish, kill, statuses, wait_for
from tests.crash_helpers import ledger_rows as rows
from tests.lane_helpers import line_bills, result_of, write_jobs, write_policy

JOBS = 12


@pytest.fixture
def api():
    with FakeOpenAIServer(api_key=STANDIN_KEY) as srv:
        yield srv


def lines_sent(api: FakeOpenAIServer) -> dict[str, int]:
    """How many upstream batches each job's line went into."""
    seen: dict[str, int] = {}
    for batch_id in api.batch_order:
        content = api.files[api.batches[batch_id]["input_file_id"]]["content"]
        for raw in content.splitlines():
            cid = json.loads(raw)["custom_id"]
            seen[cid] = seen.get(cid, 0) + 1
    return seen


def assert_whole(api: FakeOpenAIServer, out, jobs: int = JOBS) -> None:
    assert set(statuses(out).values()) == {"done"} and len(statuses(out)) == jobs
    assert set(lines_sent(api).values()) == {1}, lines_sent(api)  # no job in two batches
    bills = line_bills(api)
    assert sorted(bills) == sorted(statuses(out)) and all(len(v) == 1 for v in bills.values())  # billed once each
    for job_id in statuses(out):
        assert Decimal(result_of(out, job_id)["cost_usd"]) == bills[job_id][0]
    [(spend,)] = rows(out, "SELECT SUM(cost_nusd) FROM attempts")
    assert Decimal(spend) / 10**9 == sum(b for _, _, b in api.batch_bills)
    assert rows(out, "SELECT COUNT(*) FROM attempts WHERE state='reserved'") == [(0,)]  # nothing held or unknown


@pytest.mark.parametrize(
    "moment,created",
    [
        ("batch_queued", 0),  # killed while collecting: nothing recorded, nothing sent
        ("batch_before_create", 0),  # recorded, the create never went out
        ("batch_after_create", 1),  # created upstream, its id never recorded: found by metadata
        ("batch_collected", 1),  # answers downloaded, not yet recorded: collected again
    ],
)
def test_kill_at_a_batch_moment_then_rerun(api, tmp_path, moment, created):
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, JOBS), write_policy(tmp_path, api.base_url)
    marker = tmp_path / "stopped"
    proc = editroute_run(manifest, policy, out, hook=f"{moment}:-:{marker}")
    wait_for(marker.exists, proc, why=f"the run to reach {moment}")
    if moment == "batch_collected":
        wait_for(lambda: api.batches[api.batch_order[0]]["status"] == "completed", proc, why="the batch to finish")
    kill(proc)
    assert len(api.batch_creates) == created
    code, report, err = finish(editroute_run(manifest, policy, out))
    assert code == 0, err
    assert len(api.batch_creates) == 1, "a rerun created a second batch for the same jobs"
    assert_whole(api, out)
    assert report["batches"][0]["status"] == "completed"


def test_kill_while_jobs_finish_from_the_batch(api, tmp_path):
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, JOBS), write_policy(tmp_path, api.base_url)
    marker = tmp_path / "stopped"
    proc = editroute_run(manifest, policy, out, hook=f"outputs_pending:j0005:{marker}")
    wait_for(marker.exists, proc, why="job j0005 to be writing its outputs")
    kill(proc)
    for answers in (out / ".batches").glob("*/output.jsonl"):  # even the downloaded answers lost: fetched again
        answers.unlink()
    code, _, err = finish(editroute_run(manifest, policy, out))
    assert code == 0, err
    assert len(api.batch_creates) == 1
    assert_whole(api, out)
    fetched = [r for r in api.requests if r.path.endswith("/content")]
    assert len(fetched) == 2  # the output file: collected by the first run, then again for the rest of the jobs


def test_random_kills_never_create_a_second_batch_or_pay_twice(api, tmp_path):
    api.batch_line_s = 0.08  # a batch that runs about as long as the kills come: they land in every phase
    out = tmp_path / "out"
    manifest, policy = write_jobs(tmp_path, JOBS), write_policy(tmp_path, api.base_url)
    rng = random.Random(15)
    for _ in range(4):
        proc = editroute_run(manifest, policy, out)
        wait_for(lambda: (out / "editroute.db").exists(), proc, why="the ledger")
        try:
            proc.wait(timeout=rng.uniform(0.05, 1.5))
        except Exception:  # noqa: BLE001 - still running: kill it there
            kill(proc)
        else:
            proc.communicate()
    code, _, err = finish(editroute_run(manifest, policy, out))
    assert code == 0, err
    assert_whole(api, out)
