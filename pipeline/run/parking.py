"""Jobs parked in a batch lane: waiting hours for their batch without holding a thread or a slot of the runner's
window, then resumed where they left off.

`_run` (execute.py) parks a job when the lane answers with a parked future (`park`): with the runner's
`ParkingLot` the job's thread returns at once (`Outcome(status="parked")`), and when the batch is collected the job
resumes on the runner's pool (`resume_parked`): under the same budget hold, the lane now answers with the line's
result, and the job finishes (outputs written exactly as for a synchronous call) or takes its fallbacks. Without a
runner (a caller that never parks) the thread waits here instead.

On stop (Ctrl-C): a line whose answer is in is still finished (it is paid for); one that did not run is not sent
anywhere else now (its hold released: nothing billed) and the job is interrupted; a rerun resumes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import replace
from typing import Any

from backends.errors import InvalidRequest
from pipeline.jobs import Job
from pipeline.run.context import ExecContext, Outcome, Parked
from pipeline.run.journal import Pending
from pipeline.run.results import materialize, read_inputs

log = logging.getLogger(__name__)


def park(
    job: Job, key: str, dec: Any, ctx: ExecContext, t0: float, backend: str, attempt_id: int, future: Future
) -> Outcome:
    parked = Parked(job, key, dec, t0, backend, attempt_id, future)
    if ctx.park is not None:
        ctx.park(parked)
        return Outcome(job.id, "parked", backend=backend)
    wait([future])  # nobody to hand it to: wait here for the batch
    return resume_parked(parked, ctx)


def resume_parked(p: Parked, ctx: ExecContext) -> Outcome:
    """The job's batch is collected (or it never left, or cannot be followed): finish it from its line."""
    from pipeline.run.execute import _failed, _interrupted, _run

    ledger, job = ctx.ledger, p.job
    if p.future.cancelled():  # stopped before its batch was sent: nothing went out
        ledger.release(p.attempt_id, "stopped before its batch was sent")
        return _interrupted(ledger, job.id, p.backend, 0, p.t0)
    exc = p.future.exception()
    if exc is not None:  # the lane cannot follow its batch now: the job stays in it, and may be billed
        ledger.hold_unknown(p.attempt_id, exc if isinstance(exc, BaseException) else str(exc))
        log.warning("job %s: its batch cannot be followed (%s); rerun to resume it", job.id, exc)
        return _interrupted(ledger, job.id, p.backend, 0, p.t0)
    state = p.future.result()
    if state == "cancelled" or (ctx.stop.is_set() and state != "completed"):
        ledger.release(p.attempt_id, f"its batch line was {state}: it did not run, nothing was billed")
        return _interrupted(ledger, job.id, p.backend, 0, p.t0)
    if ctx.stop.is_set():  # the answer is in and paid for: write it even though the run is stopping
        ctx = replace(ctx, stop=threading.Event())
    try:
        request = materialize(replace(job.request, job_id=job.id), read_inputs(job.request))
    except InvalidRequest as exc:
        ledger.fail(job.id, exc.with_context(job_id=job.id))
        return _failed(job.id, exc, p.t0)
    return _run(job, request, p.key, p.decision, ctx, p.t0, Pending(p.backend, (p.attempt_id,), 0.0))


class ParkingLot:
    """The runner's parked jobs: counted, each resumed on `run_on` (the runner's pool) when its future is done."""

    def __init__(self, resume: Callable[[Parked], None], run_on: Callable[..., Any]) -> None:
        self._resume, self._run_on = resume, run_on
        self._cond = threading.Condition()
        self.count = 0

    def park(self, parked: Parked) -> None:
        with self._cond:
            self.count += 1
        parked.future.add_done_callback(lambda _f: self._run_on(self._one, parked))

    def _one(self, parked: Parked) -> None:
        try:
            self._resume(parked)
        finally:
            with self._cond:
                self.count -= 1
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """True once no job is parked (False: `timeout` passed first)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count == 0, timeout)
