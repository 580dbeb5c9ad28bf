"""The cluster check made before any actor starts (no Ray import here).

Ray leaves an actor that asks for resources the cluster lacks pending forever (a `num_gpus: 1` actor on a
CPU-only cluster never starts and never fails), so `plan_actors()` compares each actor's needs with
`ray.cluster_resources()` first and fails fast with a `ConfigError` that names the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pipeline.errors import ConfigError
from pipeline.routing import RaySettings

_EPS = 1e-9


def fmt_resources(resources: Mapping[str, float]) -> str:
    """`CPU=2, GPU=1` for messages; node markers and memory figures left out."""
    shown = {
        k: v
        for k, v in sorted(resources.items())
        if not k.startswith("node:") and k not in ("memory", "object_store_memory")
    }
    return ", ".join(f"{k}={v:g}" for k, v in shown.items()) or "nothing"


def plan_actors(settings: RaySettings, backends: list[str], cluster: Mapping[str, float]) -> int:
    """Actors per backend that the cluster's total resources admit; ConfigError when it cannot host them.

    Default: fill the cluster (one actor per GPU with `num_gpus: 1`), split evenly between the backends.
    """
    if not backends:
        return 0
    needs = settings.actor_needs()
    who = ", ".join(repr(b) for b in backends)
    missing = {k: v for k, v in needs.items() if cluster.get(k, 0.0) + _EPS < v}
    if missing:
        hints = []
        if "GPU" in missing:
            hints.append(
                "start the worker nodes on GPU machines (`ray start ... --num-gpus N`), or set "
                "`ray: {num_gpus: 0}` in the policy to run on CPUs"
            )
        custom = sorted(set(missing) - {"CPU", "GPU"})
        if custom:
            example = json.dumps({custom[0]: 1})
            hints.append(f"declare them on the nodes, e.g. `ray start ... --resources='{example}'`")
        raise ConfigError(
            f"the Ray cluster cannot host an actor for backend {who}: each actor needs {fmt_resources(needs)} but the "
            f"cluster has {fmt_resources({k: cluster.get(k, 0.0) for k in missing})} of it "
            f"(cluster total: {fmt_resources(cluster)}). Fix: {'; '.join(hints) or 'lower `ray.num_cpus`'}."
        )
    fit = min((int(cluster[k] / v + _EPS) for k, v in needs.items()), default=len(backends))
    if settings.actors is None:
        per_backend = fit // len(backends)
        if per_backend < 1:
            raise ConfigError(
                f"the Ray cluster fits {fit} actor(s) of {fmt_resources(needs)} but {len(backends)} "
                f"backends ({who}) need one each (cluster total: {fmt_resources(cluster)})"
            )
        return per_backend
    wanted = settings.actors * len(backends)
    if wanted > fit:
        raise ConfigError(
            f"`ray.actors: {settings.actors}` for backend {who} needs {wanted} actor(s) of "
            f"{fmt_resources(needs)}, but the cluster fits only {fit} "
            f"(cluster total: {fmt_resources(cluster)})"
        )
    return settings.actors
