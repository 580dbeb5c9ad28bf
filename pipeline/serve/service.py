"""The edit service behind `POST /v1/images/edits`: which backend a `model` means, idempotency keys,
de-duplication of retries, and running each job through `pipeline.run.execute` (no FastAPI here).

    service = EditService(policy, out_dir)                   # one ledger, one executor, one router
    prepared = service.prepare(parsed_form, idempotency_key=None, tenant="local", retry=False)  # thread: hashes
    served = await service.submit(prepared)                  # runs it, or joins the same job in flight

`model`: absent or `auto` routes by the policy; a policy backend name pins that backend (its fallbacks
apply, as for a pinned manifest job); an OpenAI model id (`gpt-image-2.6-flare`, ...) pins the policy's openai
backend that has that model, or the first openai backend re-targeted at it (same settings, budgets and
ledger name; no fallbacks: the caller asked for that model).

Repeated requests and retries, as OpenAI does them: a new request runs a new job (a new image, billed) even when
it repeats an earlier one byte for byte; a retry never runs or bills a job twice. The job's key, and the job id
derived from it, is:
- the `Idempotency-Key` header, scoped to the caller's API key and the model, when the request has one;
- else, for a request with an explicit `seed` (deterministic output), a hash of its content: the same request
  gets the same stored answer;
- else, for a retry (`x-stainless-retry-count` >= 1, which the OpenAI SDKs send on their automatic retries), the
  key of the latest job with the same content (and caller), found in this process or else in the ledger, so
  a retry after a dropped connection joins or reuses that job; none found: a new job;
- else (a first try) a fresh key, `http:<content hash>:<uuid>`.
A repeat of a finished job gets the stored result from disk (`execute_job` checks the ledger and the files' sha256);
one that arrives while the job runs waits for it in this process (`submit`) and gets the same answer. Either way
the answer says `x-editroute-reused: true` and `x-editroute-billed-usd: 0`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from backends.base import EditBackend, EditRequest, EditResult
from backends.errors import EditError, InvalidRequest
from backends.openai import DEFAULT_MODEL as OPENAI_DEFAULT_MODEL
from backends.pricing import load_prices
from backends.registry import create_backend
from backends.validation import capability_problems
from pipeline.jobs import Job
from pipeline.ledger import Ledger
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
from pipeline.serve.metrics import Metrics
from pipeline.serve.wire import ApiError, ParsedForm, error_for_invalid, error_for_outcome

log = logging.getLogger(__name__)

OPENAI_PREFIXES = ("gpt-image", "chatgpt-image", "dall-e")
LATEST_KEYS = 10_000  # contents remembered for retries in this process (older ones: the ledger)


@dataclass(frozen=True)
class Target:
    kind: Literal["auto", "backend", "model"]
    backend: str | None = None  # the policy backend pinned (None: route)
    model: str | None = None  # the OpenAI model id asked for, when it re-targets a backend


@dataclass(frozen=True)
class Prepared:
    job: Job  # id derived from `key`; request bytes in memory
    key: str
    target: Target


@dataclass(frozen=True)
class Served:
    outcome: Outcome
    decision: Decision | None
    images: tuple[bytes, ...] = ()
    joined: bool = False  # this request waited for the same job started by another request
    param: str | None = None  # the form field to blame when the job could not be routed


class _OverrideExecutor:
    """Runs re-targeted backends on their own threads and every other backend on the shared executor (so a GPU
    backend keeps its single queue)."""

    def __init__(self, base: Any, overrides: dict[str, EditBackend]) -> None:
        self.base = base
        self.own = LocalExecutor(overrides)

    def submit(self, backend: str, request: EditRequest, *, journal: Any = None) -> Future[EditResult]:
        return (self.own if backend in self.own.backends else self.base).submit(backend, request, journal=journal)

    def close(self) -> None:
        self.own.close()


@dataclass
class _Variant:
    router: Router
    ctx: ExecContext
    executor: _OverrideExecutor


def _sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class EditService:
    def __init__(
        self,
        policy: Policy,
        out_dir: str | Path,
        *,
        backends: dict[str, EditBackend] | None = None,
        job_threads: int = 32,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.policy = policy
        self.out_dir = Path(out_dir)
        self.backends: dict[str, Any] = dict(backends) if backends is not None else build_backends(policy)
        self.ledger = Ledger.in_dir(self.out_dir)
        self.ledger.unknown_outcome_hold_s = policy.unknown_outcome_hold_s
        if (recovered := self.ledger.recover_orphans()).total:
            log.info("holds left by a stopped process: %s", recovered.describe())
        self.executor = LocalExecutor(self.backends)
        caps = budget_caps(policy)
        # A server answers a client that is waiting: wait out at most two short rate limits, then say 429.
        self.ctx = ExecContext(
            ledger=self.ledger,
            executor=self.executor,
            out_dir=self.out_dir,
            backends=self.backends,
            caps_for=lambda name: caps.get(name, ()),
            retry=retry or RetryPolicy(max_rate_limited=2, max_delay_s=10.0),
            retry_failed=True,
            hosted=hosted_by(policy),
        )
        self.router = Router(policy, self.backends, self.ledger)
        self.metrics = Metrics()
        self.openai_backends = [n for n, spec in policy.backends.items() if spec.kind == "openai"]
        self._prices = load_prices()
        self._variants: dict[str, _Variant] = {}
        self._variants_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=job_threads, thread_name_prefix="serve-job")
        self._inflight: dict[str, asyncio.Future[Served]] = {}
        self._latest: OrderedDict[str, str] = OrderedDict()  # content prefix -> its newest job key (for retries)
        self._latest_lock = threading.Lock()

    # ---- what `model` means ---------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """OpenAI model ids this server accepts (it needs an openai backend to run them)."""
        if not self.openai_backends:
            return []
        return [m for m, e in self._prices.models.items() if e.status != "retired" and not m.startswith("dall-e")]

    def resolve(self, model: str | None) -> Target:
        if model is None:
            return Target("auto")
        if model in self.policy.backends:
            return Target("backend", model)
        if model in self._prices.models or model.startswith(OPENAI_PREFIXES):
            if model.startswith("dall-e"):
                raise ApiError(
                    400,
                    f"Model {model!r} is not served here: editroute serves GPT image models and "
                    "its policy's backends (ask for 'auto').",
                    param="model",
                    code="model_not_found",
                )
            for name in self.openai_backends:
                if self.policy.backends[name].settings.get("model", OPENAI_DEFAULT_MODEL) == model:
                    return Target("backend", name)
            if not self.openai_backends:
                raise ApiError(
                    400,
                    f"Model {model!r} cannot run here: this server's policy has no OpenAI backend "
                    f"(ask for 'auto' or one of: {', '.join(self.policy.backends)}).",
                    param="model",
                    code="model_not_found",
                )
            self._variant(model)  # fails now if the model has no prices
            return Target("model", self.openai_backends[0], model)
        raise ApiError(
            400,
            f"Unknown model {model!r}: ask for 'auto', a backend of this server's policy "
            f"({', '.join(self.policy.backends)}) or an OpenAI image model id.",
            param="model",
            code="model_not_found",
        )

    def _variant(self, model: str) -> _Variant:
        with self._variants_lock:
            hit = self._variants.get(model)
            if hit is not None:
                return hit
            base = self.openai_backends[0]
            try:
                backend = create_backend("openai", base, {**self.policy.backends[base].settings, "model": model})
            except EditError as exc:
                raise ApiError(
                    400, f"Model {model!r} cannot run here: {exc.message}", param="model", code="model_not_found"
                ) from None
            backends = {**self.backends, base: backend}
            executor = _OverrideExecutor(self.executor, {base: backend})
            variant = _Variant(
                Router(self.policy, backends, self.ledger),
                replace(self.ctx, executor=executor, backends=backends),
                executor,
            )
            self._variants[model] = variant
            return variant

    def backend_for(self, target: Target) -> Any:
        assert target.backend is not None
        return (
            self._variant(target.model).ctx.backends[target.backend] if target.model else self.backends[target.backend]
        )

    # ---- preparing a job (blocking: call it off the event loop) ---------------------------------------

    def prepare(
        self, parsed: ParsedForm, *, idempotency_key: str | None = None, tenant: str = "local", retry: bool = False
    ) -> Prepared:
        """The job for a request; `retry`: the client says it is retrying (`x-stainless-retry-count` >= 1)."""
        target = self.resolve(parsed.model)
        job = Job(id="pending", request=parsed.request, tags=parsed.tags, backend=target.backend)
        content = job_key(job)  # what decides the output: input bytes, prompt, options, seed, pinned backend
        model = target.model or ""
        tags = ",".join(sorted(parsed.tags))
        if idempotency_key:
            key = "idem:" + _sha(tenant, idempotency_key, model)
        elif parsed.request.seed is not None:  # deterministic: the same request gets the same stored answer
            key = "http:" + _sha(content, model, tags)
        else:  # a new image per request; a retry finds the latest job of this content (and caller)
            prefix = "http:" + _sha(content, model, tags, tenant) + ":"
            key = (self._latest_key(prefix) if retry else None) or self._new_key(prefix)
        rec = self.ledger.get_by_key(key)
        if rec is not None and rec.request_hash != content:
            raise ApiError(
                400,
                "This Idempotency-Key was already used with a different request; use a new key for a new request.",
                code="idempotency_key_reused",
            )
        if target.backend is not None:
            problems = capability_problems(parsed.request, self.backend_for(target).capabilities)
            if problems:
                err = error_for_invalid(problems[0], problems[1:])
                err.message = f"model {target.model or target.backend!r} cannot run this request: {err.message}"
                raise err
        job_id = "http-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        job = replace(job, id=job_id, request=replace(parsed.request, job_id=job_id))
        return Prepared(job=job, key=key, target=target)

    def _new_key(self, prefix: str) -> str:
        key = f"{prefix}{uuid.uuid4().hex}"
        with self._latest_lock:
            self._latest[prefix] = key
            self._latest.move_to_end(prefix)
            while len(self._latest) > LATEST_KEYS:
                self._latest.popitem(last=False)
        return key

    def _latest_key(self, prefix: str) -> str | None:
        """The newest job key of this content: this process's (in flight or done), else the ledger's."""
        with self._latest_lock:
            key = self._latest.get(prefix)
        return key or self.ledger.latest_key(prefix)

    # ---- running it -----------------------------------------------------------------------------------

    async def submit(self, prepared: Prepared) -> Served:
        """Run the job on the job threads, or wait for the same job another request started."""
        fut = self._inflight.get(prepared.key)
        joined = fut is not None
        if fut is None:
            fut = asyncio.get_running_loop().run_in_executor(self._pool, self.run, prepared)
            self._inflight[prepared.key] = fut
            fut.add_done_callback(lambda _f, key=prepared.key: self._inflight.pop(key, None))
        served = await asyncio.shield(fut)  # a client that hangs up does not stop the job; its retry joins it
        return replace(served, joined=True) if joined else served

    def run(self, prepared: Prepared) -> Served:
        job, target = prepared.job, prepared.target
        variant = self._variant(target.model) if target.model else None
        router = variant.router if variant else self.router
        ctx = replace(variant.ctx if variant else self.ctx, idempotency_key=lambda _job: prepared.key)
        decisions: list[Decision] = []

        def route(j: Job) -> Decision:
            d = router.route(j)
            if target.kind == "model":
                d = replace(d, fallbacks=())
            decisions.append(d)
            return d

        self.metrics.started()
        try:
            outcome = execute_job(job, route, ctx)
        except InvalidRequest as exc:  # the ledger refused the key (reused with another request)
            outcome = Outcome(job.id, "failed", error=exc.message, error_class="InvalidRequest")
        except Exception as exc:
            log.exception("job %s: unexpected error", job.id)
            outcome = Outcome(job.id, "failed", error=f"internal error: {type(exc).__name__}", error_class="Internal")
        finally:
            self.metrics.finished()
        decision = decisions[-1] if decisions else None
        status = "reused" if outcome.reused else outcome.status
        self.metrics.job(
            outcome.backend,
            status,
            seconds=outcome.latency_s,
            cost=Decimal(0) if outcome.reused else outcome.cost,
            error_class=None if outcome.ok else outcome.error_class,
        )
        images: tuple[bytes, ...] = ()
        if outcome.ok:
            try:
                images = tuple(p.read_bytes() for p in outcome.outputs)
            except OSError as exc:
                outcome = replace(
                    outcome, status="failed", error=f"output file unreadable: {exc}", error_class="OutputError"
                )
        param = self._unroutable_param(job) if outcome.error_class == "Unroutable" else None
        return Served(outcome, decision, images, param=param)

    def _unroutable_param(self, job: Job) -> str | None:
        """The field to blame when no backend can run the job (None when some backend could)."""
        fields = []
        for backend in self.backends.values():
            problems = capability_problems(job.request, backend.capabilities)
            if not problems:
                return None
            fields.append(problems[0].field)
        return fields[0] if fields else None

    def error_for(self, served: Served) -> ApiError:
        o, d = served.outcome, served.decision
        held = d is not None and d.backend is None and any("job held" in r for r in d.reasons)
        error_class = "Busy" if o.status == "skipped" and o.error_class in ("Busy", "Duplicate") else o.error_class
        return error_for_outcome(error_class, o.error, param=served.param, budget_held=held)

    def ledger_spend(self) -> dict[str, Decimal]:
        return {name: self.ledger.total_spent(name) for name in self.policy.backends}

    def close(self) -> None:
        self.ctx.stop.set()  # calls in flight finish (and are recorded); jobs not yet calling stop as interrupted
        self._pool.shutdown(wait=True)
        for variant in self._variants.values():
            variant.executor.close()
        self.executor.close()
        retargeted = [b for v in self._variants.values() for b in v.executor.own.backends.values()]
        for backend in [*self.backends.values(), *retargeted]:
            try:
                backend.close()
            except Exception:  # closing must not hide the shutdown
                log.exception("closing backend %s", getattr(backend, "name", "?"))
        self.ledger.close()
