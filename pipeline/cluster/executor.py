"""Run self-hosted backends on a Ray cluster: a pool of actors per backend, each loading its model once.

The driver keeps everything that decides and records: routing, budgets, retries, fallbacks, the ledger
and the output files. An actor (actors.py) only runs `backend.edit(request)` (or
`edit_batch(requests)` for jobs the runner grouped: `submit_batch()`, `max_batch()`) on materialized requests
(image bytes, not paths) and returns the `EditResult` (outputs as bytes, GPU-seconds measured where the GPU
is), so workers never open the ledger or the output folder and a job is recorded once, by the one writer.

Faults: an actor that dies mid-job is killed for certain, replaced, and the job retried once on the pool;
a second death gives `BackendUnavailable`, which the runner handles like any backend outage (fallbacks).
Before any actor starts, the actor's needs are checked against `ray.cluster_resources()`, and actors must
become ready within `ready_timeout_s`: Ray would otherwise leave them pending forever (a `num_gpus: 1`
actor on a CPU-only cluster never starts and never fails).

`import ray` happens only inside functions: `import pipeline` must not import Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backends.base import EditRequest, EditResult
from backends.errors import EditError
from pipeline.cluster.actors import ActorPool, BackendRecipe, _PoolBackend
from pipeline.cluster.placement import plan_actors
from pipeline.errors import ConfigError
from pipeline.routing import RaySettings, parse_ray_settings

__all__ = ["RayExecutor", "connect", "ray_backend_names"]

log = logging.getLogger(__name__)

DEFAULT_RAY_KINDS = frozenset({"sdxl"})  # backend kinds that run on actors unless `ray.backends` says otherwise


def connect(address: str | None = None) -> bool:
    """Connect to Ray (`address`: "auto", "HOST:6379", "ray://...", or None for $RAY_ADDRESS or a new local
    instance). Reuses an existing connection; returns True when this call made it (so close() ends it)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        raise ConfigError(
            f"cannot connect to the Ray cluster at {where!r}: {exc}. Start one with "
            f"`ray start --head`, then pass `--ray-address auto` (or HOST:6379). A cluster with token "
            f"authentication (the default for `ray start` since Ray 2.59) also needs RAY_AUTH_MODE=token "
            f"here and its token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
        ) from None
    return True


def ray_backend_names(backends: Mapping[str, Any], policy: Any, settings: RaySettings) -> list[str]:
    """Backends whose jobs run on actors: `ray.backends`, else the self-hosted ones (per the policy's
    `hosting`, or GPU-bound backends when there is no policy)."""
    if settings.backends is not None:
        unknown = [b for b in settings.backends if b not in backends]
        if unknown:
            raise ConfigError(
                f"{getattr(policy, 'source', None) or 'policy'}: ray.backends: unknown backend(s) "
                f"{', '.join(map(repr, unknown))} (expected one of {', '.join(backends)})"
            )
        return list(settings.backends)
    specs = getattr(policy, "backends", None) or {}
    out = []
    for name, backend in backends.items():
        spec = specs.get(name)
        if spec is not None:
            self_hosted = getattr(spec, "hosting", None) == "self-hosted" or spec.kind in DEFAULT_RAY_KINDS
        else:
            self_hosted = bool(getattr(backend, "gpu_bound", False))
        if self_hosted:
            out.append(name)
    return out


class RayExecutor:
    """The executor seam (`submit(backend, request) -> Future[EditResult]`) over Ray actor pools for the
    self-hosted backends; every other backend runs on the local executor's threads here, with its limits.
    A backend that can share calls (`batch_key`/`edit_batch`) has its queued jobs grouped as the local executor
    groups them, up to the `max_batch` its actors report, one group per actor call.

    Nothing else changes: the runner still routes, reserves budget, writes outputs and records the ledger.
    Construction connects, checks the cluster and starts every actor (failing fast with a ConfigError).
    """

    name = "ray"

    def __init__(
        self,
        backends: Mapping[str, Any],
        *,
        policy: Any = None,
        ray_settings: RaySettings | Mapping[str, Any] | None = None,
        ray_address: str | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError('--executor ray needs Ray: pip install "editroute[ray]"') from None

        from pipeline.run import DEFAULT_BATCH_LINGER_S, BatchingPool, LocalExecutor, can_batch

        if ray_settings is None:
            ray_settings = getattr(policy, "ray", None)
        source = getattr(policy, "source", None) or "policy"
        self.settings = parse_ray_settings(ray_settings, source=source)
        self.backends = dict(backends)
        names = ray_backend_names(self.backends, policy, self.settings)
        self._local = LocalExecutor({n: b for n, b in self.backends.items() if n not in names}, limits)
        self.pools: dict[str, ActorPool] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._batching: dict[str, BatchingPool] = {}  # Ray backends whose queued jobs share actor calls
        self._owns_ray = connect(ray_address) if names else False
        try:
            size = plan_actors(self.settings, names, ray.cluster_resources()) if names else 0
            specs = getattr(policy, "backends", None) or {}
            for name in names:
                spec = specs.get(name)
                recipe = (
                    BackendRecipe(name, kind=spec.kind, settings=dict(spec.settings))
                    if spec is not None
                    else BackendRecipe(name, backend=self.backends[name])
                )
                pool = ActorPool(recipe, self.settings, size)
                pool.start()
                self.pools[name] = pool
                self._threads[name] = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"ray-{name}")
                if can_batch(self.backends[name]) and pool.max_batch > 1:  # as the local executor batches
                    self._batching[name] = BatchingPool(
                        f"ray-{name}",
                        _PoolBackend(self.backends[name], pool),
                        workers=size,
                        max_batch=pool.max_batch,
                        linger_s=DEFAULT_BATCH_LINGER_S,
                    )
        except BaseException:
            self.close()
            raise

    def capacity(self) -> int:
        """Calls in flight at once over all backends: one per actor, plus the local backends' limits."""
        return self._local.capacity() + sum(p.size for p in self.pools.values())

    def concurrency(self, backend: str) -> int | None:
        """Jobs of `backend` that run at once on Ray (one per actor); None: not on Ray."""
        pool = self.pools.get(backend)
        return pool.size if pool else None

    def submit(self, backend: str, request: EditRequest, *, journal: Any = None) -> Future[EditResult]:
        """`journal` (`pipeline.run.journal`): `started()` is said here in the driver when the call leaves for
        an actor; actors run self-hosted backends, which take no journal themselves."""
        pool = self.pools.get(backend)
        if pool is None:
            return self._local.submit(backend, request, journal=journal)
        batching = self._batching.get(backend)
        if batching is not None:
            return batching.submit(request, journal=journal)
        return self._threads[backend].submit(_on_actor, pool, request, journal)

    def max_batch(self, backend: str) -> int:
        """Jobs of `backend` worth grouping into one `submit_batch()`: on Ray as its actors report (their GPUs
        decide), else the backend's own `max_batch` (1 when it has none)."""
        pool = self.pools.get(backend)
        if pool is not None:
            return pool.max_batch
        return int(getattr(self.backends.get(backend), "max_batch", 1) or 1)

    def submit_batch(self, backend: str, requests: list[EditRequest]) -> Future[list[EditResult | EditError]]:
        """Jobs that share a `batch_key()` in one backend call; result i for request i, an `EditError` in place of
        a result for a job that failed alone. On Ray: one actor call; here: the local executor's way."""
        pool = self.pools.get(backend)
        if pool is not None:
            return self._threads[backend].submit(pool.edit_batch, list(requests))
        futures = [self._local.submit(backend, r) for r in requests]  # the local executor runs them job by job
        done: Future[list[EditResult | EditError]] = Future()
        lock = threading.Lock()

        def collect(_: Future) -> None:
            with lock:
                if done.done() or not all(f.done() for f in futures):
                    return
                out: list[EditResult | EditError] = []
                for f in futures:
                    exc = f.exception()
                    if exc is not None and not isinstance(exc, EditError):
                        done.set_exception(exc)
                        return
                    out.append(exc if exc is not None else f.result())  # type: ignore[arg-type]
                done.set_result(out)

        for f in futures:
            f.add_done_callback(collect)
        return done

    def close(self) -> None:
        for batching in self._batching.values():
            batching.shutdown(wait=True, cancel_futures=True)
        for threads in self._threads.values():
            threads.shutdown(wait=True, cancel_futures=True)
        self._local.close()
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            pool.close()
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False


def _on_actor(pool: ActorPool, request: EditRequest, journal: Any) -> EditResult:
    if journal is not None:
        journal.started(will_save=False)
    return pool.edit(request)
