"""Where backend calls run: the executor seam between deciding (router, ledger) and doing (backend.edit).

    class Executor(Protocol):
        def submit(self, backend: str, request: EditRequest, *, journal: AttemptJournal | None = None
                   ) -> Future[EditResult]: ...
        def close(self) -> None: ...

`request` arrives materialized (bytes loaded, pixels checked, picklable), so an executor may ship it to another
process or machine; the future resolves to an `EditResult` or raises a `backends.errors.EditError`. Executors
never touch the ledger or the router: only the driver process writes the ledger. `journal` (the call's, from
`pipeline.run.journal`): the executor calls `journal.started()` in the driver right before the call goes out
(after any queueing and rate limiting: a call still queued when the process dies is no crash and costs
nothing), and hands it to a backend that takes one (`resumable`, `backends.journal`).

`LocalExecutor` runs calls on threads with a limit per backend: an API backend allows `concurrency` calls in
flight and, if set, at most `requests_per_minute`; a self-hosted GPU backend gets `host_workers` threads (default
1; the diffusion backends say 2): its device lock lets one into the pipeline call at a time, while the other
prepares its inputs or pastes back and encodes the images of the call before, so the GPU does not wait for that
CPU work (results, ledger and outputs are per job as before). A backend
that can serve several jobs in one call (duck-typed: `batch_key(request) -> Hashable | None` and
`edit_batch(requests) -> list[EditResult | EditError]`, with `settings.max_batch` > 1, e.g. SDXL) gets a
`BatchingPool` instead: queued jobs with equal non-None keys share one call, up to `max_batch`, each with its own
future (so its own ledger hold, settlement, retries and fallbacks in `pipeline.run.execute`).
Other executors register in `EXECUTORS` ("name" -> "module:Class"); each class is built as
`cls(backends, policy=policy, **options)` where `backends` maps names to backend objects (`create_executor`),
and offers `capacity() -> int` (calls in flight at once over all backends; the runner sizes its window on it).
"""

from __future__ import annotations

import difflib
import importlib
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from backends.base import EditBackend, EditRequest, EditResult
from backends.journal import takes_journal
from pipeline.errors import ConfigError
from pipeline.run.batching import BatchingPool, can_batch
from pipeline.run.journal import AttemptJournal

DEFAULT_API_CONCURRENCY = 4
DEFAULT_BATCH_LINGER_S = 0.05  # how long a lone job may wait for partners (a GPU call takes seconds)

EXECUTORS: dict[str, str] = {
    "local": "pipeline.run.executors:LocalExecutor",
    "ray": "pipeline.cluster.executor:RayExecutor",
}


class Executor(Protocol):
    def submit(
        self, backend: str, request: EditRequest, *, journal: AttemptJournal | None = None
    ) -> Future[EditResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendLimits:
    concurrency: int = DEFAULT_API_CONCURRENCY
    requests_per_minute: float | None = None
    max_batch: int = 1  # jobs per call, for a backend that can share calls (1: one job per call)


def limits_for(backend: EditBackend) -> BackendLimits:
    """A backend's own limits: `settings.concurrency` / `settings.requests_per_minute` when it has settings
    (the API backend); for GPU-bound backends (`gpu_bound = True`, as SDXL) `host_workers` threads (one in the
    pipeline call, the other in pre/post-processing; 1 if the backend does not say);
    `settings.max_batch` jobs per call for a backend that can share calls."""
    settings = getattr(backend, "settings", None)
    gpu_bound = bool(getattr(backend, "gpu_bound", False))
    concurrency = getattr(settings, "concurrency", None)
    if concurrency is None:
        concurrency = int(getattr(backend, "host_workers", 1)) if gpu_bound else DEFAULT_API_CONCURRENCY
    # A backend that paces its own HTTP requests (`paces_requests`: Gemini's n calls, Firefly's uploads and polls
    # each count against the provider's limit) is not paced again per call here.
    rpm = None if getattr(backend, "paces_requests", False) else getattr(settings, "requests_per_minute", None)
    max_batch = int(getattr(settings, "max_batch", None) or 1) if can_batch(backend) else 1
    return BackendLimits(concurrency=max(1, int(concurrency)), requests_per_minute=rpm, max_batch=max(1, max_batch))


class RateLimiter:
    """Spaces calls evenly so that no more than `per_minute` start in any minute (no bursts)."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class LocalExecutor:
    """Threads in this process, one pool per backend sized by its limits (a batching pool where it can batch)."""

    def __init__(
        self,
        backends: Mapping[str, EditBackend],
        limits: Mapping[str, BackendLimits] | None = None,
        *,
        policy: Any = None,  # `policy`: accepted like every executor; unused here
        batch_linger_s: float = DEFAULT_BATCH_LINGER_S,
    ) -> None:
        self.backends = dict(backends)
        self.limits = {name: (limits or {}).get(name) or limits_for(b) for name, b in self.backends.items()}
        self._limiters = {
            name: RateLimiter(lim.requests_per_minute) for name, lim in self.limits.items() if lim.requests_per_minute
        }
        self._pools: dict[str, ThreadPoolExecutor | BatchingPool] = {}
        for name, lim in self.limits.items():
            if lim.max_batch > 1 and can_batch(self.backends[name]):
                self._pools[name] = BatchingPool(
                    name,
                    self.backends[name],
                    workers=lim.concurrency,
                    max_batch=lim.max_batch,
                    linger_s=batch_linger_s,
                    before_call=self._limiters[name].acquire if name in self._limiters else None,
                )
            else:
                self._pools[name] = ThreadPoolExecutor(max_workers=lim.concurrency, thread_name_prefix=f"edit-{name}")

    def capacity(self) -> int:
        """Jobs that can be in calls at once, over all backends (the runner sizes its window on it): a batching
        backend counts `max_batch` per call, so enough jobs queue to fill its calls."""
        return sum(
            lim.concurrency * (lim.max_batch if isinstance(self._pools[name], BatchingPool) else 1)
            for name, lim in self.limits.items()
        )

    def submit(
        self, backend: str, request: EditRequest, *, journal: AttemptJournal | None = None
    ) -> Future[EditResult]:
        try:
            pool = self._pools[backend]
        except KeyError:
            raise ConfigError(f"executor has no backend named {backend!r} (has: {', '.join(self._pools)})") from None
        if isinstance(pool, BatchingPool):
            return pool.submit(request, journal=journal)
        return pool.submit(self._call, backend, request, journal)

    def _call(self, backend: str, request: EditRequest, journal: AttemptJournal | None = None) -> EditResult:
        limiter = self._limiters.get(backend)
        if limiter is not None:
            limiter.acquire()
        return call_backend(self.backends[backend], request, journal)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def call_backend(backend: EditBackend, request: EditRequest, journal: AttemptJournal | None) -> EditResult:
    """Say the call is going out (durably), then make it; a resumable backend gets the call's journal."""
    if journal is None:
        return backend.edit(request)
    resumable = takes_journal(backend)
    journal.started(will_save=resumable)
    if resumable:
        return backend.edit(request, journal=journal)  # type: ignore[call-arg]
    return backend.edit(request)


def create_executor(name: str, backends: Mapping[str, EditBackend], **options: Any) -> Executor:
    try:
        path = EXECUTORS[name]
    except KeyError:
        close = difflib.get_close_matches(name, EXECUTORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"--executor {name!r} is not known (known: {', '.join(EXECUTORS)}).{hint}") from None
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f'--executor {name!r} needs {exc.name!r}; install its extra (pip install "editroute[{name}]")'
        ) from exc
    return getattr(module, class_name)(backends, **options)
