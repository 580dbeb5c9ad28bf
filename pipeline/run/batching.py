"""Share one backend call between queued jobs: the local executor's pool for a backend that can batch.

A backend can batch when it has `batch_key(request) -> Hashable | None` (equal non-None keys may share a call;
it must not load a model) and `edit_batch(requests) -> list[EditResult | EditError]` (result i for request i,
each with its own cost). `BatchingPool` keeps one queue per backend and `workers` threads (one per GPU):
a worker takes the oldest queued job, gathers queued jobs with the same key (in arrival order, jobs with other
keys keep their place) up to `max_batch`, and waits at most `linger_s` for partners when it has fewer, so a
lone job is barely delayed while a busy queue fills whole calls. Every job keeps its own future: the caller
(`pipeline.run.execute`) reserves, settles, retries and falls back per job, exactly as for a call of its own.
Each job's journal (if given) hears `started()` when the call that carries it begins, not while it waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from backends.base import EditRequest, EditResult
from backends.journal import takes_journal

log = logging.getLogger(__name__)


def can_batch(backend: Any) -> bool:
    return callable(getattr(backend, "edit_batch", None)) and callable(getattr(backend, "batch_key", None))


@dataclass(eq=False)
class _Queued:
    request: EditRequest
    key: Hashable | None
    future: Future
    journal: Any = None  # the job's AttemptJournal (pipeline.run.journal), if the caller keeps one


class BatchingPool:
    """Threads that run a batching backend's calls, grouping queued jobs by `batch_key` (see the module doc)."""

    def __init__(
        self,
        name: str,
        backend: Any,
        *,
        workers: int = 1,
        max_batch: int = 4,
        linger_s: float = 0.05,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.linger_s = max(0.0, linger_s)
        self.before_call = before_call  # e.g. a rate limiter's acquire: once per call, not per job
        self.calls: list[int] = []  # jobs per call made, in order (for tests and benchmarks)
        self._queue: list[_Queued] = []
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"edit-{name}-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def submit(self, request: EditRequest, *, journal: Any = None) -> Future[EditResult]:
        try:
            key = self.backend.batch_key(request)
        except Exception:  # a key the backend cannot compute: run alone, and let edit() name the problem
            log.debug("%s: batch_key failed for job %s; running it alone", self.name, request.job_id, exc_info=True)
            key = None
        future: Future[EditResult] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"executor for {self.name!r} is closed")
            self._queue.append(_Queued(request, key, future, journal))
            self._cond.notify_all()
        return future

    def _take(self) -> list[_Queued] | None:
        """The next call's jobs (None: closed and drained). Holds the lock only while choosing."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return None
                first = self._queue[0]
                if first.key is None or self.max_batch == 1:
                    return [self._queue.pop(0)]
                deadline = time.monotonic() + self.linger_s
                while True:
                    group = [q for q in self._queue if q.key == first.key][: self.max_batch]
                    left = deadline - time.monotonic()
                    if len(group) >= self.max_batch or left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
                    if first not in self._queue:  # another worker took it meanwhile
                        break
                if first not in self._queue:
                    continue
                for q in group:
                    self._queue.remove(q)
                return group

    def _work(self) -> None:
        while (group := self._take()) is not None:
            live = [q for q in group if q.future.set_running_or_notify_cancel()]  # cancelled while queued: skip
            if live:
                self._run(live)

    def _run(self, group: list[_Queued]) -> None:
        try:
            if self.before_call is not None:
                self.before_call()
            for q in group:
                if q.journal is not None:
                    q.journal.started(will_save=len(group) == 1 and takes_journal(self.backend))
            self.calls.append(len(group))
            if len(group) == 1:  # exactly what a call of its own does
                outcomes: list[Any] = [_edit(self.backend, group[0])]
            else:
                outcomes = list(self.backend.edit_batch([q.request for q in group]))
        except BaseException as exc:  # edit() errors, or a batch call that broke as a whole
            for q in group:
                q.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if len(outcomes) != len(group):
            exc = RuntimeError(f"{self.name}: edit_batch returned {len(outcomes)} results for {len(group)} jobs")
            outcomes = [exc] * len(group)
        for q, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                q.future.set_exception(outcome)
            else:
                q.future.set_result(outcome)

    def shutdown(self, wait: bool = True, cancel_futures: bool = True) -> None:
        """Stop taking jobs; queued ones are cancelled (if asked), calls under way finish."""
        with self._cond:
            self._closed = True
            if cancel_futures:
                for q in self._queue:
                    q.future.cancel()
                self._queue.clear()
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()


def _edit(backend: Any, queued: _Queued) -> Any:
    if queued.journal is not None and takes_journal(backend):
        return backend.edit(queued.request, journal=queued.journal)
    return backend.edit(queued.request)
