"""Ray actors for self-hosted backends: one `BackendActor` per GPU loads its backend once; an `ActorPool` hands
jobs to free actors, replaces an actor that dies (the job is retried once) and waits for readiness with a timeout.
Used by `pipeline.cluster.executor`; `import ray` happens only inside functions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.base import EditRequest, EditResult
from backends.errors import BackendUnavailable, EditError
from pipeline.cluster.placement import fmt_resources
from pipeline.errors import ConfigError
from pipeline.routing import RaySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failure:
    """An exception from `edit()` carried back as a value (Ray would wrap a raised one in RayTaskError)."""

    error: BaseException


@dataclass(frozen=True)
class BackendRecipe:
    """How an actor builds its backend: from the policy's `kind` and settings when known, else from a copy of
    the driver's backend object (built cheaply: no model is loaded until the first edit or `load()`)."""

    name: str
    kind: str | None = None
    settings: Mapping[str, Any] | None = None
    backend: Any = None

    def build(self) -> Any:
        if self.kind is None:
            return self.backend
        from backends.registry import create_backend

        return create_backend(self.kind, self.name, dict(self.settings or {}))


class BackendActor:
    """Runs in a Ray worker process: one backend, loaded once, used for many jobs."""

    def __init__(self, recipe: BackendRecipe) -> None:
        self._backend = recipe.build()

    def ready(self) -> dict[str, Any]:
        """Load the model now (so readiness covers it) and say where this actor runs."""
        import ray

        load = getattr(self._backend, "load", None)
        if callable(load):
            load()
        ctx = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node": ctx.get_node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "loaded": callable(load),
            "max_batch": int(getattr(self._backend, "max_batch", 1) or 1),
        }

    def edit(self, request: EditRequest) -> EditResult | _Failure:
        try:
            return self._backend.edit(request)
        except Exception as exc:  # errors are picklable by design; the driver re-raises them
            return _Failure(exc)

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult | EditError] | _Failure:
        """One shared call where the backend has `edit_batch`, else job by job; result i for request i."""
        try:
            batch = getattr(self._backend, "edit_batch", None)
            if callable(batch):
                return list(batch(requests))
            out: list[EditResult | EditError] = []
            for request in requests:
                try:
                    out.append(self._backend.edit(request))
                except EditError as exc:
                    out.append(exc)
            return out
        except Exception as exc:
            return _Failure(exc)


@dataclass
class _Actor:
    handle: Any
    info: dict[str, Any]


class ActorPool:
    """Actors of one backend. `edit()` is blocking and thread-safe: the runner's worker threads call it,
    each job takes an idle actor (waiting while all are busy), so no actor runs two jobs at once."""

    def __init__(self, recipe: BackendRecipe, ray_settings: RaySettings, size: int) -> None:
        self.name, self.recipe = recipe.name, recipe
        self.ray_settings, self.size = ray_settings, size
        self._idle: list[_Actor] = []
        self._busy: dict[int, tuple[_Actor, str | None]] = {}  # actor pid -> (actor, the job it runs)
        self._live = 0
        self._cond = threading.Condition()
        self.replaced = 0  # actors replaced after dying, for reports and tests

    # -- lifecycle ------------------------------------------------------------------------------------
    def _spawn(self, count: int) -> list[_Actor]:
        """Start `count` actors and wait until each has loaded its model; kill them all on failure."""
        import ray

        rs = self.ray_settings
        cls = ray.remote(BackendActor).options(
            num_cpus=rs.num_cpus,
            num_gpus=rs.num_gpus,
            resources=dict(rs.resources) or None,
            max_restarts=0,
            max_task_retries=0,  # the pool replaces and retries itself, exactly as documented
            name=None,
        )
        handles = [cls.remote(self.recipe) for _ in range(count)]
        refs = [h.ready.remote() for h in handles]
        start = time.monotonic()
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=rs.ready_timeout_s)
        try:
            if pending:
                raise ConfigError(
                    f"backend {self.name!r}: {len(pending)} of {count} Ray actor(s) not ready after "
                    f"{rs.ready_timeout_s:g} s. Each needs {fmt_resources(rs.actor_needs())}; free now: "
                    f"{fmt_resources(ray.available_resources())}. Other work may hold the resources, or the model "
                    f"load is slow (raise `ray.ready_timeout_s`)"
                )
            infos = ray.get(refs)
        except BaseException as exc:
            for h in handles:
                ray.kill(h, no_restart=True)
            if isinstance(exc, ConfigError):
                raise
            cause = getattr(exc, "cause", None) or exc
            raise BackendUnavailable(
                f"a Ray actor failed to start: {type(cause).__name__}: {cause}", backend=self.name
            ) from None
        log.info("backend %s: %d Ray actor(s) ready in %.1f s: %s", self.name, count, time.monotonic() - start, infos)
        return [_Actor(h, i) for h, i in zip(handles, infos, strict=True)]

    def start(self) -> None:
        actors = self._spawn(self.size)
        with self._cond:
            self._idle.extend(actors)
            self._live += len(actors)
            self._cond.notify_all()

    def close(self) -> None:
        import ray

        with self._cond:
            actors = self._idle + [a for a, _ in self._busy.values()]
            self._idle, self._busy, self._live = [], {}, 0
            self._cond.notify_all()
        for a in actors:
            ray.kill(a.handle, no_restart=True)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live actors (idle and busy)."""
        with self._cond:
            return [a.info["pid"] for a in self._idle] + list(self._busy)

    @property
    def busy(self) -> dict[int, str | None]:
        """Actor pid -> the job it is running now."""
        with self._cond:
            return {pid: job for pid, (_, job) in self._busy.items()}

    # -- jobs -----------------------------------------------------------------------------------------
    def _acquire(self, job_id: str | None) -> _Actor:
        with self._cond:
            while not self._idle:
                if self._live == 0:
                    raise BackendUnavailable(
                        "no Ray actor left to run this job (all died and could not be replaced)",
                        job_id=job_id,
                        backend=self.name,
                    )
                self._cond.wait()
            actor = self._idle.pop()
            self._busy[actor.info["pid"]] = (actor, job_id)
            return actor

    def _release(self, actor: _Actor) -> None:
        with self._cond:
            if self._busy.pop(actor.info["pid"], None) is None:
                return  # the pool was closed while this job ran
            self._idle.append(actor)
            self._cond.notify()

    def _replace(self, dead: _Actor) -> None:
        """Make sure the dead actor is gone, then start a new one; the pool shrinks if that fails."""
        import ray

        ray.kill(dead.handle, no_restart=True)
        with self._cond:
            self._busy.pop(dead.info["pid"], None)
            self._live -= 1
        try:
            (new,) = self._spawn(1)
        except Exception as exc:  # the pool goes on with fewer actors; none left -> jobs fail over
            log.warning("backend %s: could not replace a dead Ray actor: %s", self.name, exc)
            with self._cond:
                self._cond.notify_all()
            return
        self.replaced += 1
        with self._cond:
            self._live += 1
            self._idle.append(new)
            self._cond.notify()

    @property
    def max_batch(self) -> int:
        """Jobs per shared call, as the actors' backends say (their device decides, not the driver's)."""
        with self._cond:
            actors = self._idle + [a for a, _ in self._busy.values()]
        return min((int(a.info.get("max_batch", 1)) for a in actors), default=1)

    def edit(self, request: EditRequest) -> EditResult:
        request = request.materialized()  # bytes travel; paths on the driver mean nothing to a worker
        outcome = self._run("edit", request, request.job_id)
        if isinstance(outcome, _Failure):
            raise outcome.error
        return outcome

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult | EditError]:
        """Several jobs in one actor call (the backend's `edit_batch`); an actor death re-runs them all once."""
        requests = [r.materialized() for r in requests]
        outcome = self._run("edit_batch", requests, ",".join(str(r.job_id) for r in requests))
        if isinstance(outcome, _Failure):
            raise outcome.error
        return outcome

    def _run(self, method: str, payload: Any, job_id: str | None) -> Any:
        import ray
        from ray.exceptions import RayActorError

        deaths = 0
        while True:
            actor = self._acquire(job_id)
            try:
                outcome = ray.get(getattr(actor.handle, method).remote(payload))
            except RayActorError as exc:
                deaths += 1
                log.warning(
                    "backend %s: Ray actor (pid %s) died running job %s (%s); replacing it",
                    self.name,
                    actor.info.get("pid"),
                    job_id,
                    type(exc).__name__,
                )
                self._replace(actor)
                if deaths > self.ray_settings.max_job_retries:
                    raise BackendUnavailable(
                        f"the Ray actor running this job died {deaths} times (last: {type(exc).__name__})",
                        job_id=job_id,
                        backend=self.name,
                    ) from None
                continue
            self._release(actor)
            return outcome


class _PoolBackend:
    """An actor pool as `BatchingPool` sees a backend: keys from the driver's copy of the backend (it computes
    them without loading a model), calls on the actors."""

    def __init__(self, backend: Any, pool: ActorPool) -> None:
        self._backend, self._pool = backend, pool

    def batch_key(self, request: EditRequest) -> Any:
        return self._backend.batch_key(request)

    def edit(self, request: EditRequest) -> EditResult:
        return self._pool.edit(request)

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult | EditError]:
        return self._pool.edit_batch(requests)
