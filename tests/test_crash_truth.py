"""kill -9 of a real `editroute run` at named moments, against the loopback OpenAI stand-in: what was paid for
is never failed, lost or paid again, budgets hold across kills, and a killed writer leaves nothing behind.

Each test stops the run at a precise moment: the stand-in holds a job's answer (its request is in flight), or a
hook in the child (`tests.crash_hooks`) parks the job's thread at a named step; then SIGKILL, then plain reruns.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from backends.standins import FakeOpenAIServer
from tests.crash_helpers import (
    editroute_run,
    finish,
    job_of,
    kill,
    ledger_rows,
    statuses,
    wait_for,
    write_jobs,
    write_policy,
)

PRICE = Decimal("0.009024")  # one job: gpt-image-2, quality low, 1024x1024, as the stand-in bills it


class Gate:
    """Holds the stand-in's answers to the named jobs (all jobs: none named) until released: their requests
    stay in flight as long as the test wants. Once released, held requests are answered (and billed) even if
    the client is gone, as the real API bills what it generated."""

    def __init__(self) -> None:
        self.jobs: set[str] | None = set()
        self.opened = threading.Event()
        self.opened.set()

    def hold(self, *jobs: str) -> None:
        self.jobs = set(jobs) or None
        self.opened.clear()

    def release(self) -> None:
        self.opened.set()

    def __call__(self, rec) -> None:
        if self.jobs is None or job_of(rec) in self.jobs:
            self.opened.wait(120)


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.release()


@pytest.fixture
def api(gate):
    with FakeOpenAIServer(before_answer=gate) as srv:
        yield srv


def sent(api: FakeOpenAIServer, job: str) -> int:
    return sum(job_of(r) == job for r in api.requests)


def answered(api: FakeOpenAIServer) -> list:
    return [r for r in api.requests if r.answered_at is not None and r.status == 200]


def settle(condition, timeout: float = 30) -> None:
    """Wait for something the stand-in does on its own threads."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the stand-in never got there"
        time.sleep(0.01)


def verified(out: Path, job: str) -> bool:
    data = json.loads((out / job / "result.json").read_text())
    return all(hashlib.sha256((out / o["path"]).read_bytes()).hexdigest() == o["sha256"] for o in data["outputs"])


def test_a_paid_result_on_disk_is_adopted_whatever_the_crash_count(tmp_path, api, gate):
    manifest, policy, out = write_jobs(tmp_path, 2), write_policy(tmp_path, api.base_url), tmp_path / "out"
    gate.hold("job00")
    run = editroute_run(manifest, policy, out)
    # job01 finishes first: were its call in flight at both kills, it would rightly be failed after two crashes
    wait_for(lambda: sent(api, "job00") == 1 and statuses(out).get("job01") == "done", run, why="job00 in flight")
    kill(run)  # crash 1: job00's call in flight
    gate.release()

    marker = tmp_path / "result-on-disk"
    run = editroute_run(manifest, policy, out, hook=f"before_done:job00:{marker}")
    wait_for(marker.exists, run, why="job00's result.json was on disk")
    kill(run)  # crash 2: job00's outputs and result.json complete, the ledger not yet told
    assert verified(out, "job00")

    code, report, stderr = finish(editroute_run(manifest, policy, out))
    assert code == 0, stderr
    assert statuses(out) == {"job00": "done", "job01": "done"}
    assert sent(api, "job00") == 2  # the result on disk was adopted, not asked for a third time
    assert report["jobs"]["failed"] == 0


def test_budget_counts_calls_in_flight_at_a_kill_as_possible_charges(tmp_path, api, gate):
    cap = PRICE * 6
    extra = f'budgets:\n  - {{backend: api, period: day, limit_usd: "{cap}"}}\n'
    manifest, policy, out = write_jobs(tmp_path, 8), write_policy(tmp_path, api.base_url, extra=extra), tmp_path / "out"
    gate.hold()
    run = editroute_run(manifest, policy, out)
    wait_for(lambda: len(api.requests) == 4, run, why="4 calls were in flight")
    kill(run)
    gate.release()  # the API answers (and bills) the 4 calls the dead run made
    settle(lambda: len(answered(api)) == 4)

    code, report, _ = finish(editroute_run(manifest, policy, out))
    billed = sum((r.billed_usd for r in answered(api)), Decimal(0))
    assert billed <= cap, f"the API billed {billed} against a cap of {cap}"
    assert report["unknown_outcome"] == {"calls": 4, "up_to_usd": str(PRICE * 4)}
    assert code == 1 and report["jobs"]["done"] == 2  # what the cap still admits; the rest refused, not paid


def test_an_answer_that_reached_the_process_is_never_paid_again(tmp_path, api):
    manifest, policy, out = write_jobs(tmp_path, 2), write_policy(tmp_path, api.base_url), tmp_path / "out"
    marker = tmp_path / "answer-in-memory"
    run = editroute_run(manifest, policy, out, hook=f"outputs_pending:job00:{marker}")
    wait_for(lambda: marker.exists() and statuses(out).get("job01") == "done", run, why="job00's answer had arrived")
    kill(run)
    assert api.requests[[job_of(r) for r in api.requests].index("job00")].delivered_at is not None

    code, report, stderr = finish(editroute_run(manifest, policy, out))
    assert code == 0, stderr
    assert sent(api, "job00") == 1  # finished from what had arrived, not asked (and billed) again
    assert verified(out, "job00") and statuses(out)["job00"] == "done"
    assert Decimal(report["spend_usd"]) == PRICE * 2 and report["unknown_outcome"]["calls"] == 0


def test_jobs_that_were_only_queued_at_a_kill_do_not_count_as_crashed(tmp_path, api, gate):
    manifest, out = write_jobs(tmp_path, 4), tmp_path / "out"
    policy = write_policy(tmp_path, api.base_url, concurrency=1)  # one call at a time: the window's other job waits

    def holds_of(run) -> int:  # this run's budget holds: the call in flight and the job queued behind it
        rows = ledger_rows(
            out, "SELECT COUNT(*) FROM attempts WHERE state='reserved' AND owner LIKE ?", (f"%:{run.pid}:%",)
        )
        return rows[0][0] if rows else 0

    gate.hold()  # every answer held
    in_flight = []
    for kills in (1, 2):
        run = editroute_run(manifest, policy, out)
        wait_for(lambda r=run, k=kills: len(api.requests) == k and holds_of(r) == 2, run, why="one sent, one queued")
        in_flight.append(job_of(api.requests[-1]))
        kill(run)
    gate.release()
    never_sent = {"job00", "job01"} - set(in_flight)  # queued at one kill or both
    assert all(sent(api, job) == 0 for job in never_sent)

    code, report, _ = finish(editroute_run(manifest, policy, out))
    jobs = statuses(out)
    # only a job whose call was cut off at both kills reaches the crash limit (and waits for --retry-failed)
    twice = {job for job in in_flight if in_flight.count(job) == 2}
    assert {job for job, status in jobs.items() if status == "failed"} == twice
    assert all(jobs[job] == "done" for job in never_sent)
    assert code == (1 if twice else 0)
    code, _, stderr = finish(editroute_run(manifest, policy, out, extra=("--retry-failed",)))
    assert code == 0, stderr


def test_a_writer_killed_mid_way_leaves_no_temp_file_behind(tmp_path, api):
    manifest, policy, out = write_jobs(tmp_path, 2), write_policy(tmp_path, api.base_url), tmp_path / "out"
    marker = tmp_path / "writing"
    run = editroute_run(manifest, policy, out, hook=f"result_temp:job00:{marker}")
    wait_for(marker.exists, run, why="job00's files were being written")
    kill(run)
    assert sorted(p.name.split(".")[1] for p in (out / "job00").glob(".*.tmp")) == ["0", "result"]

    code, _, stderr = finish(editroute_run(manifest, policy, out))
    assert code == 0, stderr
    assert [p for p in out.rglob("*.tmp")] == []  # the killed writer's temp files are gone
    assert sorted(p.name for p in (out / "job00").iterdir() if not p.name.startswith(".")) == ["0.png", "result.json"]
    assert verified(out, "job00")
