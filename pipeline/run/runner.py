"""Run a manifest: validate it all, route each job, execute with per-backend limits, resume after anything.

    result = run_batch("jobs.jsonl", "configs/policies/balanced.yaml", "out/")

1. The whole manifest is checked first (every problem at once, with line numbers); entries with problems are
   recorded as failed with their reason and the rest run.
2. Jobs stream from the manifest through a bounded window of in-flight jobs (twice the executor's capacity),
   so memory stays flat whatever the manifest's length; images are read when their job runs.
3. Each job goes through `pipeline.run.execute_job` (idempotency, routing with the ledger as spend source,
   budget holds, retries, fallbacks, atomic outputs, call journals). Rerunning skips done jobs whose outputs are
   intact, finishes jobs from what a crash left paid for on disk, `retry_failed` retries failed ones, and a job
   whose call a crash cut off is retried once (a job that was only queued does not count). First, the holds of
   runs that died are settled: calls that never went out are released, hosted calls in flight become possible
   charges (budgets count them; the policy's `unknown_outcome_hold` says for how long).
4. `stop` (Ctrl-C) stops taking jobs and lets in-flight calls finish; jobs still waiting to call are marked
   interrupted and resume on the next run. A second Ctrl-C abandons in-flight calls (marked interrupted).
5. Jobs routed to a batch lane (`kind: openai-batch`) join a batch and park without holding a thread
   (`batch_lane.py`, `parking.py`); once every other job is in a call or done the lanes send what they hold, and
   the run waits for its batches. Ctrl-C cancels them upstream; what they finished is still written (paid for).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.jobs import Manifest, ManifestProblem
from pipeline.ledger import BudgetCap, Ledger
from pipeline.routing import Policy, Router, build_backends, load_policy
from pipeline.run.batch_lane import BatchLane, open_lanes
from pipeline.run.context import ExecContext, Outcome, Parked, StopSignal
from pipeline.run.execute import execute_job
from pipeline.run.executors import Executor, create_executor
from pipeline.run.parking import ParkingLot, resume_parked
from pipeline.run.preflight import check_out_dir, check_run_disk_space, open_ledger
from pipeline.run.progress import NullProgress, Tally

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    ledger_path: Path
    tally: Tally
    problems: list[ManifestProblem] = field(default_factory=list)
    interrupted: bool = False
    jobs: int = 0  # valid jobs this run took from the manifest (0 with problems: nothing could run)
    stand_ins: dict[str, str] = field(default_factory=dict)  # backend -> what stand-in it is (test-only kinds)

    @property
    def ok(self) -> bool:
        # skipped = failed in an earlier run and not retried, or held by another run: the manifest is not done
        return self.tally.failed == 0 and self.tally.skipped == 0 and not self.problems and not self.interrupted


def stand_ins(backends: Mapping[str, Any]) -> dict[str, str]:
    """The backends that are test-only stand-ins (they carry a `stand_in` label), so reports can say so."""
    return {name: b.stand_in for name, b in backends.items() if isinstance(getattr(b, "stand_in", None), str)}


def budget_caps(policy: Policy) -> dict[str, list[BudgetCap]]:
    """The policy's budgets as holds the ledger enforces at call time, per backend."""
    caps: dict[str, list[BudgetCap]] = {}
    for b in policy.budgets:
        caps.setdefault(b.backend, []).append(BudgetCap(b.backend, b.period, usd=b.limit_usd))
    return caps


def hosted_by(policy: Policy):
    """`ExecContext.hosted` from the policy's `hosting:` (a backend it does not name counts as hosted)."""
    return lambda name: name not in policy.backends or policy.hosting(name) == "api"


class InvalidManifestEntry(Exception):
    """A manifest entry that cannot run; its name is the reason the report files it under."""


def record_problems(ledger: Ledger, problems: list[ManifestProblem]) -> None:
    """Entries that cannot run are failed jobs with their reasons (those without a usable id are only printed)."""
    by_id: dict[str, list[str]] = {}
    for p in problems:
        if p.job_id:
            by_id.setdefault(p.job_id, []).append(f"line {p.line}: {p.message}" if p.line else p.message)
    for job_id, messages in by_id.items():
        ledger.record_invalid(job_id, InvalidManifestEntry("; ".join(messages)))


def run_batch(
    manifest: str | Path,
    policy: str | Path | Policy,
    out_dir: str | Path,
    *,
    executor: str = "local",
    retry_failed: bool = False,
    max_jobs: int | None = None,
    progress: Any = None,
    backends: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
    executor_options: Mapping[str, Any] | None = None,
) -> RunResult:
    out = Path(out_dir)
    progress = progress or NullProgress()
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    man = Manifest(manifest)
    problems = man.check()
    for p in problems:
        progress.note(f"[manifest] {p}")
    backends = dict(backends) if backends is not None else build_backends(policy)
    ledger = open_ledger(check_out_dir(out))  # everything local is checked before the first paid call
    try:
        check_run_disk_space(out, man, ledger, max_jobs)
    except ConfigError:
        ledger.close()
        raise
    ledger.unknown_outcome_hold_s = policy.unknown_outcome_hold_s
    if (recovered := ledger.recover_orphans()).total:
        progress.note(recovered.describe())
    record_problems(ledger, problems)
    engine: Executor = create_executor(executor, backends, policy=policy, **dict(executor_options or {}))
    lanes = open_lanes(backends, ledger, out)
    caps = budget_caps(policy)
    ctx = ExecContext(
        ledger=ledger,
        executor=engine,
        out_dir=out,
        backends=backends,
        caps_for=lambda name: caps.get(name, ()),
        retry_failed=retry_failed,
        stop=stop or StopSignal(),  # wakes waiting jobs at once: no polling
        skip_misconfigured=True,
        hosted=hosted_by(policy),
        fallback_on_rejected=policy.fallback_on_rejected,
        lanes=lanes,
    )
    router = Router(policy, backends, ledger)
    capacity = getattr(engine, "capacity", lambda: 4)()
    window = max(2, 2 * capacity)
    slots = threading.BoundedSemaphore(window)
    total = man.valid if max_jobs is None else min(man.valid, max_jobs)
    progress.start(total)
    result = RunResult(out, ledger.path, progress.tally, problems, jobs=total, stand_ins=stand_ins(backends))
    if result.stand_ins:
        progress.note(f"STAND-IN backends (not real edits): {', '.join(result.stand_ins)}")
    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="job")
    abandoned = False

    def resume(parked: Parked) -> None:  # a job's batch is collected: finish it on the pool
        try:
            outcome = resume_parked(parked, ctx)
        except Exception as exc:  # a bug must not sink the batch
            log.exception("job %s: unexpected error", parked.job.id)
            ledger.fail(parked.job.id, f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
            outcome = Outcome(parked.job.id, "failed", error=str(exc), error_class=type(exc).__name__)
        if outcome.status != "parked":  # (parked again: its line was sent again in a new batch)
            progress.finished(outcome)

    parking = ParkingLot(resume, pool.submit)
    ctx.park = parking.park

    def one(job) -> Outcome:
        progress.started(job.id)
        try:
            outcome = execute_job(job, router.route, ctx)
        except Exception as exc:  # a bug must not sink the batch: the job fails, the rest run
            log.exception("job %s: unexpected error", job.id)
            ledger.fail(job.id, f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)
            outcome = Outcome(job.id, "failed", error=str(exc), error_class=type(exc).__name__)
        finally:
            slots.release()
        if outcome.status != "parked":  # a parked job reports when its batch is collected
            progress.finished(outcome)
        return outcome

    try:
        try:
            for job in itertools.islice(man.jobs(), max_jobs):
                while not slots.acquire(timeout=0.25):
                    pass
                if ctx.stop.is_set():
                    slots.release()
                    break
                pool.submit(one, job)
            _drain(slots, window, list(lanes.values()), parking, ctx.stop)
        except KeyboardInterrupt:
            ctx.stop.set()
            result.interrupted = True
            progress.note("stopping: in-flight calls finish first (Ctrl-C again to abandon them)")
            if parking.count:
                progress.note("cancelling batches upstream; their finished lines are collected and written")
            try:
                _drain(slots, window, list(lanes.values()), parking, ctx.stop)
            except KeyboardInterrupt:
                abandoned = True
                ledger.interrupt()
                raise
        if ctx.stop.is_set():
            result.interrupted = True
    finally:
        pool.shutdown(wait=not abandoned, cancel_futures=True)
        progress.close()
        if not abandoned:
            for lane in lanes.values():
                lane.close()
            engine.close()
            ledger.close()
    return result


def _drain(
    slots: threading.BoundedSemaphore, window: int, lanes: list[BatchLane], parking: ParkingLot, stop: threading.Event
) -> None:
    """Wait for every job taken: first those in calls; then, as no more jobs can join a batch, the lanes send what
    they hold and the jobs parked in batches are waited for (on stop, the batches are cancelled upstream)."""
    _wait_all(slots, window)
    for lane in lanes:
        lane.flush()
    stopped = False
    while True:
        if stop.is_set() and not stopped:
            stopped = True
            for lane in lanes:
                lane.stop()
        if parking.wait(0.25):
            return


def _wait_all(slots: threading.BoundedSemaphore, window: int) -> None:
    """Block until every in-flight job has released its slot (interruptible by Ctrl-C)."""
    taken = 0
    try:
        while taken < window:
            if slots.acquire(timeout=0.25):
                taken += 1
    finally:
        for _ in range(taken):
            slots.release()
