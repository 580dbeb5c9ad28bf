"""Taking a job (step 1 of `execute_job`): whatever is already paid for is never paid for again.

A done job whose result verifies on disk is reused (or, under another job id, named its duplicate); else the job
is claimed in the ledger (exactly once: `Ledger.claim`). Then what a stopped run left paid for is looked at: a
result that reached disk and verifies (hashes match, images decode) is adopted (billed once, marked done),
whatever the job's crash count; calls a resumable backend journaled are handed back for `execute_job` to finish
first. Taking the job clears the temp files a killed writer left in its folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.jobs import Job
from pipeline.run.context import ExecContext, Outcome
from pipeline.run.journal import Pending
from pipeline.run.results import stored_result

log = logging.getLogger(__name__)


def _reused(job_id: str, data: Mapping[str, Any], out_dir: Path, duplicate_of: str | None = None) -> Outcome:
    return Outcome(
        job_id=job_id,
        status="done",
        backend=data.get("backend"),
        cost=Decimal(data.get("cost_usd", "0")),
        outputs=tuple(out_dir / o["path"] for o in data.get("outputs", [])),
        artifacts=tuple(out_dir / o["path"] for o in data.get("artifacts", [])),
        reused=True,
        duplicate_of=duplicate_of,
        result=data,
    )


def take_job(job: Job, key: str, request_hash: str, ctx: ExecContext) -> Outcome | list[Pending]:
    """The job's outcome if it needs no call (reused, a duplicate, skipped, failed before, adopted from disk);
    else it is ours (claimed, running) and this is the journaled calls an earlier run paid for, to finish first
    (empty: none)."""
    ledger = ctx.ledger
    rec = ledger.get_by_key(key)
    if rec is not None and rec.status == "done" and (data := stored_result(ctx.out_dir, rec.id, key)):
        if rec.id != job.id:
            ledger.record_duplicate(job.id, rec)
        else:
            ctx.journals.clear(job.id)  # left by a run that stopped between done and clearing it
        return _reused(job.id, data, ctx.out_dir, duplicate_of=None if rec.id == job.id else rec.id)
    # what a crash may have left paid for on disk: a verified result, or an answer a backend journaled (a done
    # row's own result was just checked and failed: checking it again, stricter, could not pass)
    journals = ctx.journals
    ours = rec is None or (rec.id == job.id and rec.status != "done")
    left = stored_result(ctx.out_dir, job.id, key, decode=True) if ours else None
    pending = [p for p in ctx.pending(job.id, key) if p.backend in ctx.backends] if left is None else []
    claim = ledger.claim(
        job.id,
        key,
        request_hash,
        retry_failed=ctx.retry_failed,
        rerun=rec is not None,
        paid_on_disk=left is not None or bool(pending),
    )
    if claim.action == "duplicate":
        other = claim.record
        if other.status == "done" and (data := stored_result(ctx.out_dir, other.id, key)):
            ledger.record_duplicate(job.id, other)
            return _reused(job.id, data, ctx.out_dir, duplicate_of=other.id)
        return Outcome(
            job.id,
            "skipped",
            error=f"same inputs as job {other.id!r} ({other.status})",
            error_class="Duplicate",
            duplicate_of=other.id,
        )
    if claim.action in ("failed", "busy"):
        r = claim.record
        what = "running in another process" if claim.action == "busy" else f"failed before: {r.error}"
        return Outcome(
            job.id,
            "failed" if claim.recovered else "skipped",
            backend=r.backend,
            cost=r.cost,
            error=what,
            error_class=r.error_class or "Busy",
        )
    if claim.action == "done":  # a done row whose files were fine after all (rerun raced) -> reuse
        if data := stored_result(ctx.out_dir, job.id, key):
            return _reused(job.id, data, ctx.out_dir)
    if removed := journals.tidy(job.id):  # the job is ours now: no live writer uses its folder
        log.info("job %s: removed %d temp file(s) a stopped run left", job.id, removed)
    if left is not None:
        # the outputs reached disk but the process died before the ledger said done: bill once, finish
        ledger.adopt(
            job.id,
            backend=left["backend"],
            outputs=left["outputs"],
            cost=Decimal(left["cost_usd"]),
            usage=left.get("usage"),
            attempt_id=left.get("attempt_id"),
        )
        journals.clear(job.id)
        log.info("job %s: adopted the result a stopped run left on disk", job.id)
        return _reused(job.id, left, ctx.out_dir)
    return pending
