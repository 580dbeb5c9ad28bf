"""The single-job execution core, shared by the batch runner, the HTTP server and the Ray executor.

    ctx = ExecContext(ledger=Ledger.in_dir(out), executor=LocalExecutor(backends), out_dir=out,
                      backends=backends, caps_for=lambda name: caps)   # caps: ledger.BudgetCap list
    outcome = execute_job(job, router.route, ctx)     # or a ready Decision instead of router.route

`execute_job(job, decision, ctx) -> Outcome` never raises for a job's own problems (they come back as
`Outcome(status="failed", error=..., error_class=...)`); it raises only for programming/config errors.
Steps, each recorded in the ledger:

1. Idempotency. The key is `job_key(job)` (sha256 of image/mask bytes, prompt, options, seed, pinned backend;
   `ctx.idempotency_key` overrides the key, e.g. from an `Idempotency-Key` header). If the ledger has the
   key done and `DIR/<job id>/result.json` lists outputs that exist with their recorded sha256, the stored
   result is returned (`reused=True`) and no backend is called, nor the router; a verified result a crash left
   on disk is adopted (billed once). Same inputs under another job id: `duplicate_of` names the first job.
   Taking the job (`pipeline.run.claim`) also finds the calls a stopped run journaled, to finish first.
2. Materialize: bytes read and pixels decoded; a corrupt image fails here as `InvalidRequest`, no spend.
3. Route (if `decision` is a callable) and run: for the chosen backend, then each of `decision.fallbacks`,
   reserve the estimate in the ledger under `ctx.caps_for(backend)` (a failed hold moves to the next
   fallback), call it through `ctx.executor`, settle the actual cost. `RateLimited` waits (`retry_after`, else
   exponential backoff with jitter) and retries up to `ctx.retry.max_rate_limited` times, then moves on;
   `BackendUnavailable` and `BudgetExceeded` move to the next fallback (with `ctx.skip_misconfigured`, a batch
   run calls a backend no more after its first `BackendMisconfigured`); `InvalidRequest` and
   `ContentRejected` fail the job at once (the latter falls back only with `ctx.fallback_on_rejected`).
   `ctx.stop` (a threading.Event, set on Ctrl-C) stops before the next call: the job is marked interrupted.
   Each call gets a journal (`pipeline.run.journal`): the executor records durably that the call is going out,
   and a resumable backend saves what it was paid for (the raw answer, an async job id) before using it. A
   rerun finishes from a journal first, on the backend that saved it, under that call's budget hold (no new
   reservation, no second payment). A call that went out and never answered (`OutcomeUnknown`), or a hosted one
   that went out and raised an unexpected error, keeps its hold as a possible charge; a failed call that was
   billed all the same (`EditError.spent_usd`) is settled at that.
4. Outputs: `DIR/<job id>/<k>.<format>` (k = 0..n-1), each `result.artifacts` file beside them, then
   `DIR/<job id>/result.json` (backend, model, cost, usage, timings, seed, reasons, attempts, sha256 of each
   file; what was asked: prompt, tier, input paths), each to a temp name, fsynced and renamed, result.json last,
   then ONE fsync of the job's folder (`pipeline.run.files.write_files`), all BEFORE the ledger says done; then
   the job's journal is cleared.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from decimal import Decimal
from typing import Any

from backends.base import EditRequest, EditResult
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    BudgetExceeded,
    ContentRejected,
    EditError,
    InvalidRequest,
    OutcomeUnknown,
    RateLimited,
)
from pipeline.jobs import Job
from pipeline.ledger import Ledger
from pipeline.routing import Decision
from pipeline.run.claim import take_job
from pipeline.run.context import ExecContext, Outcome, StopSignal
from pipeline.run.files import write_files
from pipeline.run.journal import Pending
from pipeline.run.result_record import result_contents
from pipeline.run.results import job_key, materialize, read_inputs

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$")

# ---- the core ----------------------------------------------------------------------------------------


def execute_job(job: Job, decision: Decision | Callable[[Job], Decision], ctx: ExecContext) -> Outcome:
    t0 = time.perf_counter()
    ledger = ctx.ledger
    try:
        if not _SAFE_ID.match(job.id):
            raise InvalidRequest(
                f"job id {job.id!r} cannot name an output folder (letters, digits, '.', '_', '-'; at most 128)",
                field="id",
                value=job.id,
            )
        raw = read_inputs(job.request)
    except InvalidRequest as exc:
        ledger.record_invalid(job.id, exc.with_context(job_id=job.id))
        return _failed(job.id, exc, t0)
    key = job_key(job, raw)
    request_hash = key
    if ctx.idempotency_key is not None and (given := ctx.idempotency_key(job)):
        key = given

    # 1. idempotency: a result already on disk is never paid for again; what a crash left paid for is finished
    taken = take_job(job, key, request_hash, ctx)
    if isinstance(taken, Outcome):
        return taken
    pending = taken

    # 2. materialize: a corrupt image fails here, before any spend
    try:
        request = materialize(replace(job.request, job_id=job.id), raw)
    except InvalidRequest as exc:
        ledger.fail(job.id, exc.with_context(job_id=job.id))
        return _failed(job.id, exc, t0)

    # 3. route and run
    try:
        dec = decision(job) if callable(decision) else decision
    except EditError as exc:
        ledger.fail(job.id, exc.with_context(job_id=job.id))
        return _failed(job.id, exc, t0)
    ledger.note_plan(job.id, dec.backend, dec.estimate.usd if dec.estimate else None)
    if dec.backend is None and not pending:
        msg = "no backend may run this job: " + "; ".join(dec.reasons)
        ledger.fail(job.id, msg, error_class="Unroutable")
        return Outcome(job.id, "failed", error=msg, error_class="Unroutable", latency_s=time.perf_counter() - t0)
    outcome = _run(job, request, key, dec, ctx, t0, pending[0] if pending else None)
    if not outcome.ok:
        ctx.journals.discard_empty(job.id)
    return outcome


def _failed(job_id: str, exc: BaseException, t0: float, backend: str | None = None, attempts: int = 0) -> Outcome:
    return Outcome(
        job_id,
        "failed",
        backend=backend,
        error=str(exc),
        error_class=type(exc).__name__,
        attempts=attempts,
        latency_s=time.perf_counter() - t0,
        error_detail=exc,
    )


def _estimate(dec: Decision, name: str, request: EditRequest, ctx: ExecContext) -> Decimal:
    if name == dec.backend and dec.estimate is not None:
        return dec.estimate.usd
    for alt in dec.alternatives:
        if alt.backend == name and alt.estimate is not None:
            return alt.estimate.usd
    return ctx.backends[name].estimate(request).usd


def _run(
    job: Job, request: EditRequest, key: str, dec: Decision, ctx: ExecContext, t0: float, resume: Pending | None
) -> Outcome:
    """Call the backends in order until one succeeds. `resume`: a backend that journaled what an earlier run paid
    for; it goes first, under that call's hold, whatever the route says now."""
    ledger = ctx.ledger
    first = [resume.backend] if resume is not None else []
    candidates = [n for n in dict.fromkeys([*first, dec.backend, *dec.fallbacks]) if n is not None]
    tried: list[dict[str, Any]] = []
    last: EditError | None = None
    calls = 0
    for name in candidates:
        rate_limited = 0
        while True:
            if ctx.stop.is_set():
                return _interrupted(ledger, job.id, name, calls, t0)
            if ctx.skip_misconfigured and name in ctx.misconfigured:  # known broken this run: not called again
                last = BackendMisconfigured(ctx.misconfigured[name], job_id=job.id, backend=name)
                tried.append(_tried(name, last))
                break
            taken = ledger.take_over(resume.attempt_ids) if resume is not None and name == resume.backend else None
            resume = None  # one go: a retry after this is a call like any other
            try:
                attempt_id = taken or ledger.reserve(
                    job.id, name, _estimate(dec, name, request, ctx), ctx.caps_for(name)
                )
            except EditError as exc:  # BudgetExceeded, or an estimate the backend refuses
                last = exc.with_context(job_id=job.id, backend=name)
                tried.append(_tried(name, exc))
                if isinstance(exc, InvalidRequest):
                    ledger.fail(job.id, exc, backend=name)
                    return _failed(job.id, exc, t0, name, calls)
                break
            started = time.perf_counter()
            journal = ctx.journals.for_call(ledger, job.id, key, name, attempt_id, hosted=ctx.is_hosted(name))
            lane = ctx.lanes.get(name)  # a batch lane: the job joins a batch (pipeline.run.batch_lane)
            if lane is not None:
                future = lane.submit(request, journal, job.deadline)
            else:
                future = ctx.executor.submit(name, request, journal=journal)
            if getattr(future, "parked", False):  # its result comes when its batch is collected, hours later
                from pipeline.run.parking import park

                return park(job, key, dec, ctx, t0, name, attempt_id, future)
            if _cancelled_while_queued(future, ctx.stop):
                if taken:  # the journaled work stays paid for, and still a possible charge
                    ledger.hold_unknown(attempt_id, "stopped before its journaled work was resumed")
                else:
                    ledger.release(attempt_id, "stopped before the call started")
                return _interrupted(ledger, job.id, name, calls, t0)
            calls += 1
            try:
                result = future.result()  # (tries the backend retried after no answer: possible charges too)
                ledger.add_possible_charges(attempt_id, int(result.extras.get("possible_charges") or 0))
            except OutcomeUnknown as exc:  # sent, never answered: may be billed; kept as a possible charge
                ledger.add_possible_charges(attempt_id, exc.possible_charges)
                ledger.hold_unknown(attempt_id, exc)
                tried.append(_tried(name, exc))
                last = exc.with_context(job_id=job.id, backend=name)
                log.warning("job %s: %s", job.id, last)
                break
            except (RateLimited, BackendUnavailable, BudgetExceeded, InvalidRequest, ContentRejected) as exc:
                ledger.add_possible_charges(attempt_id, exc.possible_charges)
                ledger.settle(attempt_id, exc.spent_usd or Decimal(0), error=exc)
                tried.append(_tried(name, exc, exc.spent_usd or Decimal(0)))
                last = exc.with_context(job_id=job.id, backend=name)
                if isinstance(exc, RateLimited):
                    if rate_limited >= ctx.retry.max_rate_limited:
                        break
                    delay = ctx.retry.delay(rate_limited, exc.retry_after)
                    rate_limited += 1
                    log.info("job %s: %s rate-limited; retrying in %.1fs", job.id, name, delay)
                    ctx.stop.wait(delay)
                    continue
                if isinstance(exc, ContentRejected) and ctx.fallback_on_rejected:
                    break
                if isinstance(exc, (InvalidRequest, ContentRejected)):  # the request itself: no fallback helps
                    ledger.fail(job.id, exc, backend=name)
                    return _failed(job.id, exc, t0, name, calls)
                if isinstance(exc, BackendMisconfigured) and ctx.skip_misconfigured:
                    if ctx.misconfigured.setdefault(name, exc.message) is exc.message:  # the first one says so
                        log.warning(
                            "backend %r is misconfigured: %s; this run no longer calls it (fix the "
                            "setting and rerun with --retry-failed)",
                            name,
                            exc.message,
                        )
                    break
                log.warning("job %s: %s", job.id, last)  # BackendUnavailable, BudgetExceeded: next fallback
                break
            except Exception as exc:  # a bug in a backend must not sink the batch
                log.exception("job %s: backend %s raised an unexpected error", job.id, name)
                ledger.settle_unexplained(attempt_id, exc)  # a hosted call that went out: a possible charge
                ledger.fail(job.id, f"{type(exc).__name__}: {exc}", backend=name, error_class=type(exc).__name__)
                return _failed(job.id, exc, t0, name, calls)
            tried.append(_tried(name, None, result.cost_usd, time.perf_counter() - started))
            if ctx.on_result is not None:
                try:
                    ctx.on_result(job, name, result)
                except Exception:  # the hook must not lose a paid result
                    log.exception("job %s: on_result hook failed", job.id)
            return _finish(job, key, dec, result, attempt_id, tried, ctx, t0, calls)
    last_error = {t["backend"]: t["error"] for t in tried if t["error"]}  # one line per backend
    summary = "; ".join(f"{b}: {e}" for b, e in last_error.items()) or "nothing tried"
    msg = f"every backend failed: {summary}"
    ledger.fail(job.id, msg, error_class=type(last).__name__ if last else "Failed")
    return Outcome(
        job.id,
        "failed",
        backend=candidates[-1] if candidates else None,
        error=msg,
        error_class=type(last).__name__ if last else "Failed",
        attempts=calls,
        latency_s=time.perf_counter() - t0,
        error_detail=last,
    )


def _interrupted(ledger: Ledger, job_id: str, backend: str, calls: int, t0: float) -> Outcome:
    ledger.interrupt([job_id])
    return Outcome(
        job_id,
        "interrupted",
        backend=backend,
        error="stopped before it finished",
        error_class="Interrupted",
        attempts=calls,
        latency_s=time.perf_counter() - t0,
    )


def _cancelled_while_queued(future: Future, stop: threading.Event) -> bool:
    """Wait for the call; on stop, cancel it if it has not started yet (a started call always finishes)."""
    if isinstance(stop, StopSignal):  # no polling: the future's completion or the stop wakes us
        woke = threading.Event()
        future.add_done_callback(lambda _f: woke.set())
        stop.watch(woke)
        try:
            woke.wait()
            if future.done():
                return future.cancelled()
            return future.cancel()  # False: it started; the caller waits for its result
        finally:
            stop.unwatch(woke)
    while True:  # a plain Event from an older caller
        try:
            future.exception(timeout=0.05)
            return False
        except FutureTimeout:
            if stop.is_set() and future.cancel():
                return True
        except CancelledError:
            return True


def _tried(
    backend: str, exc: BaseException | None, cost: Decimal = Decimal(0), seconds: float | None = None
) -> dict[str, Any]:
    return {
        "backend": backend,
        "error_class": type(exc).__name__ if exc else None,
        "error": getattr(exc, "message", str(exc)) if exc else None,
        "cost_usd": str(cost),
        "seconds": None if seconds is None else round(seconds, 4),
    }


def _finish(
    job: Job,
    key: str,
    dec: Decision,
    result: EditResult,
    attempt_id: int,
    tried: list[dict[str, Any]],
    ctx: ExecContext,
    t0: float,
    calls: int,
) -> Outcome:
    """Write every file (atomically), result.json last, and only then tell the ledger the job is done."""
    folder = ctx.out_dir / job.id
    usage = result.usage.to_dict()
    try:
        files, record = result_contents(job, key, dec, result, attempt_id, tried)
        write_files(folder, files)  # in order: result.json last
    except OSError as exc:  # paid, but could not be kept: bill it and say so
        ctx.ledger.settle(attempt_id, result.cost_usd, usage=usage)
        ctx.ledger.fail(
            job.id,
            f"could not write outputs to {folder}: {exc}",
            error_class="OutputError",
            backend=tried[-1]["backend"],
        )
        return _failed(job.id, exc, t0, tried[-1]["backend"], calls)
    cost = ctx.ledger.complete(
        job.id,
        backend=record["backend"],
        outputs=record["outputs"],
        cost=result.cost_usd,
        attempt_id=attempt_id,
        usage=usage,
        call_s=result.timings.get("total_s"),
        model=result.model,
    )
    ctx.journals.clear(job.id)  # done and durable: nothing left to resume from
    return Outcome(
        job.id,
        "done",
        backend=record["backend"],
        cost=cost,
        outputs=tuple(ctx.out_dir / o["path"] for o in record["outputs"]),
        artifacts=tuple(ctx.out_dir / a["path"] for a in record["artifacts"]),
        attempts=calls,
        latency_s=time.perf_counter() - t0,
        result=record,
    )
