"""What `execute_job` works with and hands back: its context (ledger, executor, output folder, budgets, retry
rules, Ctrl-C, which backends are hosted, the call journals) and the `Outcome` of one job."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from backends.base import EditBackend, EditResult
from pipeline.jobs import Job
from pipeline.ledger import BudgetCap, Ledger
from pipeline.run.executors import Executor
from pipeline.run.journal import JournalStore, Pending

# parked: waiting in a batch lane (no thread held); the runner resumes it when its batch is collected
OutcomeStatus = Literal["done", "failed", "skipped", "interrupted", "parked"]


@dataclass(frozen=True)
class RetryPolicy:
    max_rate_limited: int = 6  # RateLimited retries per backend before moving to the next fallback
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        return min(self.base_delay_s * 2**attempt, self.max_delay_s) * (0.5 + random.random() / 2)


class StopSignal(threading.Event):
    """`ExecContext.stop` that wakes the jobs waiting for their calls when it is set, so they wait on the call's
    future without polling. `child()` gives a job its own stop (a server cancels one job) that the parent's stop
    also sets."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: set[threading.Event] = set()
        self._watch_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._watch_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.set()

    def watch(self, event: threading.Event) -> None:
        with self._watch_lock:
            self._watchers.add(event)
        if self.is_set():
            event.set()

    def unwatch(self, event: threading.Event) -> None:
        with self._watch_lock:
            self._watchers.discard(event)

    def child(self) -> StopSignal:
        kid = StopSignal()
        self.watch(kid)
        return kid


@dataclass
class ExecContext:
    ledger: Ledger
    executor: Executor
    out_dir: Path
    backends: Mapping[str, EditBackend]  # for estimates on fallbacks (calls go through `executor`)
    caps_for: Callable[[str], Sequence[BudgetCap]] = lambda name: ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_failed: bool = False
    fallback_on_rejected: bool = False
    stop: threading.Event = field(default_factory=lambda: StopSignal())
    idempotency_key: Callable[[Job], str | None] | None = None  # e.g. the server's Idempotency-Key header
    # A batch run stops calling a backend after its first BackendMisconfigured (no key, missing model): the
    # rest of the run goes straight to fallbacks instead of failing the same way per job. name -> message.
    skip_misconfigured: bool = False
    misconfigured: dict[str, str] = field(default_factory=dict)
    # Whether a backend is a hosted service (which bills what it generated even if the answer never reached us):
    # its calls cut off by a crash are possible charges. Default: every backend that is not GPU-bound.
    hosted: Callable[[str], bool] | None = None
    # Called with (job, backend name, result) as soon as a backend's result is in hand, before its files are
    # written and the ledger says done (a server answers its client from it, without waiting for the fsyncs).
    on_result: Callable[[Job, str, EditResult], None] | None = None
    # Batch lanes by backend name (`pipeline.run.batch_lane`): their jobs join a batch instead of a call. `park`:
    # the runner takes a job that waits in a batch (no thread held) and resumes it when the batch is collected.
    lanes: Mapping[str, Any] = field(default_factory=dict)
    park: Callable[[Parked], None] | None = None

    def pending(self, job_id: str, key: str) -> list[Pending]:
        """What a rerun can finish from, newest first: journaled answers and jobs (journal.py), and lines of batches
        this run's lanes know (the ledger)."""
        found = list(self.journals.pending(job_id, key))
        if self.lanes:
            found += [Pending(b, (a,), t) for b, a, t in self.ledger.batch_pending(job_id, key) if b in self.lanes]
        return sorted(found, key=lambda p: -p.saved_at)

    def is_hosted(self, name: str) -> bool:
        if self.hosted is not None:
            return self.hosted(name)
        return not getattr(self.backends.get(name), "gpu_bound", False)

    @property
    def journals(self) -> JournalStore:
        return JournalStore(self.out_dir)


@dataclass(frozen=True)
class Parked:
    """A job waiting in a batch lane: what resuming it needs (the request is read again then: no image bytes are
    held for hours)."""

    job: Job
    key: str
    decision: Any  # pipeline.routing.Decision
    t0: float
    backend: str
    attempt_id: int
    future: Future


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: OutcomeStatus  # skipped: failed before and not retried, or running elsewhere
    backend: str | None = None
    cost: Decimal = Decimal(0)  # billed for this job (for a reused result: what it cost when it ran)
    outputs: tuple[Path, ...] = ()
    artifacts: tuple[Path, ...] = ()
    error: str | None = None
    error_class: str | None = None
    reused: bool = False  # the result came from disk; nothing was called
    duplicate_of: str | None = None
    attempts: int = 0  # backend calls made now
    latency_s: float = 0.0
    result: Mapping[str, Any] | None = None  # the content of result.json, when done
    error_detail: BaseException | None = None  # the last backend error (a server passes the provider's answer on)

    @property
    def ok(self) -> bool:
        return self.status == "done"
