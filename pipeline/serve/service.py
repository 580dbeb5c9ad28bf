"""The edit service behind `POST /v1/images/edits`: which job a request belongs to (`identity`), and running each
job through `pipeline.run.execute` (no FastAPI here); what `model` means is `models`.

    service = EditService(policy, out_dir)                     # one ledger, one executor, one router
    prepared = service.prepare(parsed, who)                    # blocking (hashes inputs): call it off the loop
    served = await service.start(prepared)                     # runs it, or joins the same job in flight

A new request runs a new job (a new image, billed) even when it repeats an earlier one byte for byte, as with
OpenAI; a retry of it never runs or bills twice (`identity`). A job's key, and the job id derived from it:
- with an `Idempotency-Key` header: that key (scoped to the caller) and the request's content; the same key with
  another request is refused (400 `idempotency_key_reused`);
- with a `seed` (deterministic output): the request's content, so the same request gets the same stored answer;
- an SDK retry (`x-stainless-retry-count` >= 1): its own first try's key, if that is still joinable;
- else a fresh key, `http:<content hash>:<uuid>`.
A request for a job in flight waits for it in this process; one for a finished job gets the stored result from
disk (`execute_job` checks the ledger and the files' sha256). Either way: `x-editroute-reused: true`, billed 0.

The client is answered as soon as the backend has its answer: the provider's base64 on the job's live channel
(`backends.live`), else the result in hand (`ExecContext.on_result`); the images are decoded and the job's files
and ledger row written right after, on the job's thread, exactly as before (no decode, no fsync on the answer's
path; `wait_idle()` waits for them).
In serve the backend's own retry loop is the one retry budget (`max_retries`, `ServeSettings.max_retry_wait_s`):
the execution core does not retry rate limits on top of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from backends import live
from backends.base import EditBackend, EditResult
from backends.errors import InvalidRequest
from backends.validation import capability_problems
from pipeline.deadlines import describe_s
from pipeline.jobs import Job
from pipeline.ledger import Ledger, now_ms
from pipeline.routing import Decision, Policy, Router, build_backends
from pipeline.run import (
    ExecContext,
    LocalExecutor,
    Outcome,
    RetryPolicy,
    budget_caps,
    execute_job,
    hosted_by,
    job_key,
)
from pipeline.serve.identity import Keys, Tries, sha
from pipeline.serve.metrics import Metrics
from pipeline.serve.models import OPENAI_KIND, Models, Target, serve_policy
from pipeline.serve.refs import Refs
from pipeline.serve.settings import ServeSettings
from pipeline.serve.wire import ApiError, Limits, ParsedRequest, error_for_invalid, error_for_outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Who:
    """Who sent a request, as far as matching retries goes (`identity`)."""

    tenant: str = "local"  # the caller's API key, hashed
    client: str = ""  # `identity.client_fingerprint`
    retry: int = 0  # x-stainless-retry-count
    read_timeout_s: float | None = None  # x-stainless-read-timeout
    upload_s: float = 0.0  # how long this request took to arrive
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Prepared:
    job: Job  # id derived from `key`; request bytes in memory
    key: str
    target: Target
    stop: Any = None  # this job's stop (`StopSignal.child()`), set when its streaming client goes away


@dataclass(frozen=True)
class Served:
    """A job's answer: `record` has result.json's fields (backend, model, cost_usd, usage, quality, size, ...)."""

    ok: bool
    images: tuple[bytes | str | memoryview, ...] = ()  # bytes, or the provider's base64 (answered before decoding)
    record: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None  # set when the job ended (always, for a failure)
    decision: Decision | None = None
    reused: bool = False  # the stored result of an earlier run
    joined: bool = False  # this request waited for the same job started by another request
    problem: InvalidRequest | None = None  # what no backend could honour, when the job could not be routed
    taken: threading.Event | None = None  # set once the answer is passed on (the backend then decodes and writes)

    def passed_on(self) -> None:
        if self.taken is not None:
            self.taken.set()

    @property
    def backend(self) -> str | None:
        return self.record.get("backend") or (self.outcome.backend if self.outcome else None)

    @property
    def cost(self) -> Decimal:
        return Decimal(self.record.get("cost_usd") or "0")


def _record(backend: str, result: EditResult) -> dict[str, Any]:
    """result.json's answer fields, from a result in hand (before the file is written)."""
    return {
        "backend": backend,
        "model": result.model,
        "cost_usd": str(result.cost_usd),
        "usage": result.usage.to_dict(),
        "quality": result.quality,
        "size": result.size,
        "output_format": result.output_format,
        "background": result.background,
        "extras": dict(result.extras),
    }


class EditService:
    def __init__(
        self,
        policy: Policy,
        out_dir: str | Path,
        *,
        backends: dict[str, EditBackend] | None = None,
        settings: ServeSettings | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        url_client: Any = None,
    ) -> None:
        self.settings = settings or ServeSettings()
        self.limits = limits or Limits()
        self._declared = dict(policy.backends)  # as written, to say where each limit comes from
        self.policy = serve_policy(policy, self.settings)
        self.out_dir = Path(out_dir)
        self.backends: dict[str, Any] = dict(backends) if backends is not None else build_backends(self.policy)
        self.ledger = Ledger.in_dir(self.out_dir)
        self.ledger.unknown_outcome_hold_s = policy.unknown_outcome_hold_s
        if (recovered := self.ledger.recover_orphans()).total:
            log.info("holds left by a stopped process: %s", recovered.describe())
        self.executor = LocalExecutor(self.backends)
        caps = budget_caps(policy)
        self.ctx = ExecContext(
            ledger=self.ledger,
            executor=self.executor,
            out_dir=self.out_dir,
            backends=self.backends,
            caps_for=lambda name: caps.get(name, ()),
            # one retry budget: the backend's (max_retries, max_retry_wait_s); a rate limit left over after it
            # goes to the next fallback or to the client, with the provider's retry-after
            retry=retry or RetryPolicy(max_rate_limited=0),
            retry_failed=True,
            hosted=hosted_by(policy),
            fallback_on_rejected=policy.fallback_on_rejected,  # the policy means the same here as under `run`
        )
        self.router = Router(self.policy, self.backends, self.ledger)
        self.metrics = Metrics()
        self.refs = Refs(self.settings, self.limits, url_client)
        self.models = Models(self.policy, self.backends, self.executor, self.ledger, self.ctx)
        threads = self.settings.job_threads or min(512, self.executor.capacity() + 16)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serve-job")
        self._inflight: dict[str, asyncio.Future[Served]] = {}
        self._channels: dict[str, tuple[live.Channel, Any]] = {}  # job key -> (live channel, stop), while it runs
        self.tries = Tries()
        self._keys = Keys()
        self._running = 0  # jobs whose run() has not returned (their files and ledger row may still be coming)
        self._idle = threading.Condition()

    def describe_limits(self) -> list[str]:
        """One line per backend: the calls it may have in flight, and where that number comes from (said at
        start-up: a proxy that silently ran 4 calls at a time ran 16 clients at 0.31x the direct throughput)."""
        lines = []
        for name, lim in self.executor.limits.items():
            spec = self._declared.get(name)
            rpm = f", at most {lim.requests_per_minute:g}/min" if lim.requests_per_minute else ""
            turnaround = getattr(getattr(self.backends.get(name), "capabilities", None), "turnaround_s", None)
            if turnaround is not None:  # the router offers a lane only jobs with a deadline: no HTTP request has one
                lane = f"a batch lane: results within {describe_s(turnaround)}"
                lines.append(f"{name}: not used by the server ({lane}; requests carry no deadline)")
                continue
            if getattr(self.backends.get(name), "gpu_bound", False):  # its device lock keeps calls serial
                overlap = f"; {lim.concurrency} host threads overlap post-processing" if lim.concurrency > 1 else ""
                lines.append(f"{name}: 1 pipeline call at a time on its device{overlap}")
                continue
            if spec is None:
                why = "given to the server"
            elif "concurrency" in spec.settings:
                why = "the policy's concurrency:"
            elif spec.kind == OPENAI_KIND:
                why = "serve's default for API backends; set concurrency: in the policy to change it"
            else:
                why = "the backend's own limit"
            lines.append(f"{name}: {lim.concurrency} call(s) in flight{rpm} ({why})")
        return lines

    # ---- what `model` means (models.py) --------------------------------------------------------------

    def model_ids(self) -> list[str]:
        return self.models.model_ids()

    def resolve(self, model: str | None) -> Target:
        return self.models.resolve(model)

    def backend_for(self, target: Target) -> Any:
        return self.models.backend_for(target)

    # ---- preparing a job (blocking: call it off the event loop) ---------------------------------------

    def prepare(self, parsed: ParsedRequest, who: Who | None = None) -> Prepared:
        """The job for a request, and which job key it belongs to (`identity`)."""
        who = who or Who()
        target = self.resolve(parsed.model)
        request = parsed.request
        if target.backend is not None:
            problems = capability_problems(request, self.backend_for(target).capabilities)
            if problems:
                raise error_for_invalid(problems[0], capability=True, model=target.model or target.backend)
        job = Job(id="pending", request=request, tags=parsed.tags, backend=target.backend)
        # what decides the output (input bytes, prompt, options, seed, pinned backend), and how it is delivered
        content = sha(job_key(job), target.model or "", ",".join(sorted(parsed.tags)), str(request.partial_images))
        if who.idempotency_key:
            prefix = "idem:" + sha(who.tenant, who.idempotency_key)[:40] + ":"
            key = prefix + content[:32]
            if self._keys.claim(prefix, key, lambda: self.ledger.latest_key(prefix)) != key:
                raise ApiError(
                    400,
                    "This Idempotency-Key was already used with a different request; use a new key for a new request.",
                    code="idempotency_key_reused",
                )
        elif request.seed is not None:  # deterministic: the same request gets the same stored answer
            key = "http:" + content
        else:
            prefix = "http:" + sha(content, who.tenant, who.client) + ":"
            key = (self._join(prefix, who) if who.retry >= 1 else None) or self.tries.first_try(prefix)
        job_id = "http-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        job = replace(job, id=job_id, request=replace(request, job_id=job_id))
        return Prepared(job=job, key=key, target=target, stop=self.ctx.stop.child())

    def _join(self, prefix: str, who: Who) -> str | None:
        """The first try an SDK retry belongs to, if it may still join it (`identity`)."""
        window = self.settings.join_window_s(who.retry, who.read_timeout_s, who.upload_s)
        found = self.tries.joinable(prefix, window)
        if found is not None:
            return found or None
        key = self.ledger.latest_key(prefix)  # not seen by this process: a restart in between
        rec = self.ledger.get_by_key(key) if key else None
        if rec is None or rec.status == "done":  # a done job may have been answered before the restart
            return None
        age_s = (now_ms() - rec.created_at) / 1000
        return key if age_s <= window else None

    # ---- running it -----------------------------------------------------------------------------------

    def start(
        self, prepared: Prepared, on_partial: Callable[[int, bytes | str], None] | None = None
    ) -> tuple[asyncio.Future[Served], bool]:
        """The job's answer to await (shielded: a client that hangs up does not stop it) and whether this request
        joined a job already in flight. The answer comes as soon as the backend has it: its final answer on the
        job's live channel (the provider's base64, before it is decoded and written), else the result in hand.
        `on_partial(index, image)` gets each partial image of a streamed job, on the event loop."""
        fut = self._inflight.get(prepared.key)
        if fut is not None:  # joined: the running job's own stop and channel stay the ones that count
            if prepared.stop is not None:
                self.ctx.stop.unwatch(prepared.stop)
            return fut, True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inflight[prepared.key] = fut

        def deliver(served: Served) -> None:
            if not fut.done():
                fut.set_result(served)

        def early(served: Served) -> None:
            loop.call_soon_threadsafe(deliver, served)

        def final(answer: live.FinalAnswer) -> None:
            early(Served(True, answer.images_b64, _record(answer.result.backend, answer.result), taken=answer.taken))

        def partial(index: int, image: bytes | str) -> None:
            loop.call_soon_threadsafe(on_partial, index, image)

        request = prepared.job.request
        channel = live.listen(
            prepared.job.id, request.partial_images or 0, partial if on_partial is not None else None, final
        )
        self._channels[prepared.key] = (channel, prepared.stop)

        def ended(job: asyncio.Future[Served]) -> None:
            live.stop_listening(channel)
            self._channels.pop(prepared.key, None)
            self._inflight.pop(prepared.key, None)
            deliver(job.result())  # run() never raises

        with self._idle:
            self._running += 1
        loop.run_in_executor(self._pool, self._run_counted, prepared, early).add_done_callback(ended)
        return fut, False

    def _run_counted(self, prepared: Prepared, early: Any) -> Served:
        try:
            return self.run(prepared, early)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until every started job has finished writing its files and ledger row (an answer can come before
        them); False on timeout. For tests and orderly shutdowns."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=timeout_s)

    def run(self, prepared: Prepared, early: Any = None) -> Served:
        """Run the job on this thread; `early(Served)` as soon as a result is in hand."""
        job, target = prepared.job, prepared.target
        variant = self.models.variant(target.model) if target.model else None
        router = variant.router if variant else self.router
        decisions: list[Decision] = []
        answered = False  # `early` has the result in hand: the Served returned below is not the one delivered

        def on_result(_job: Job, backend: str, result: EditResult) -> None:
            nonlocal answered
            if early is not None:
                early(Served(True, result.images, _record(backend, result), decision=decisions[-1]))
                answered = True

        ctx = replace(
            variant.ctx if variant else self.ctx,
            idempotency_key=lambda _job: prepared.key,
            on_result=on_result,
            **({"stop": prepared.stop} if prepared.stop is not None else {}),
        )

        def route(j: Job) -> Decision:
            d = router.route(j)
            if target.kind == "model":
                d = replace(d, fallbacks=())
            decisions.append(d)
            return d

        self.metrics.started()
        try:
            outcome = execute_job(job, route, ctx)
        except Exception as exc:
            log.exception("job %s: unexpected error", job.id)
            outcome = Outcome(job.id, "failed", error=f"internal error: {type(exc).__name__}", error_class="Internal")
        finally:
            self.metrics.finished()
            if prepared.stop is not None:
                self.ctx.stop.unwatch(prepared.stop)
        decision = decisions[-1] if decisions else None
        status = "reused" if outcome.reused else outcome.status
        self.metrics.job(
            outcome.backend,
            status,
            seconds=outcome.latency_s,
            cost=Decimal(0) if outcome.reused else outcome.cost,
            error_class=None if outcome.ok else outcome.error_class,
        )
        if not outcome.ok:
            problem = self._unroutable_problem(job) if outcome.error_class == "Unroutable" else None
            return Served(False, outcome=outcome, decision=decision, problem=problem)
        if answered:  # its images went out from memory: the files just written are not read back
            return Served(True, (), dict(outcome.result or {}), outcome, decision)
        try:
            images = tuple(p.read_bytes() for p in outcome.outputs)
        except OSError as exc:
            failed = replace(outcome, status="failed", error=f"output file unreadable: {exc}", error_class="Output")
            return Served(False, outcome=failed, decision=decision)
        return Served(True, images, dict(outcome.result or {}), outcome, decision, reused=outcome.reused)

    def cancel(self, prepared: Prepared) -> None:
        """Its streaming client went away: stop the job (its backend stops at its next step or event, and says
        what it spent), and let no retry join it."""
        self.tries.cancelled(prepared.key)
        channel, stop = self._channels.get(prepared.key, (None, prepared.stop))
        if channel is not None:
            channel.cancel()
        if stop is not None:
            stop.set()

    def _unroutable_problem(self, job: Job) -> InvalidRequest | None:
        """What to blame when no backend can run the job (None when some backend could: a budget or a rule)."""
        found = []
        for backend in self.backends.values():
            problems = capability_problems(job.request, backend.capabilities)
            if not problems:
                return None
            found.append(problems[0])
        return found[0] if found else None

    def error_for(self, served: Served) -> ApiError:
        o, d = served.outcome, served.decision
        assert o is not None
        held = d is not None and d.backend is None and any("job held" in r for r in d.reasons)
        if o.error_class == "Unroutable" and served.problem is not None and not held:
            err = error_for_invalid(served.problem, capability=True)
            err.message = o.error or err.message  # the router's reasons, backend by backend
            return err
        error_class = "Busy" if o.status == "skipped" and o.error_class in ("Busy", "Duplicate") else o.error_class
        return error_for_outcome(error_class, o.error, budget_held=held, detail=o.error_detail)

    def ledger_spend(self) -> dict[str, Decimal]:
        return {name: self.ledger.total_spent(name) for name in self.policy.backends}

    def close(self) -> None:
        self.ctx.stop.set()  # calls in flight finish (and are recorded); jobs not yet calling stop as interrupted
        self._pool.shutdown(wait=True)
        self.models.close()
        self.executor.close()
        self.refs.close()
        retargeted = self.models.retargeted()
        for backend in [*self.backends.values(), *retargeted]:
            try:
                backend.close()
            except Exception:  # closing must not hide the shutdown
                log.exception("closing backend %s", getattr(backend, "name", "?"))
        self.ledger.close()
