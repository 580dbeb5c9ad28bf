"""The policy's `ray:` section and the cluster check made before any actor starts (no Ray import here).

Ray leaves an actor that asks for resources the cluster lacks pending forever (a `num_gpus: 1` actor on a
CPU-only cluster never starts and never fails), so `plan_actors()` compares each actor's needs with
`ray.cluster_resources()` first and fails fast with a `ConfigError` that names the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

_EPS = 1e-9


class RaySettings(BaseModel):
    """The policy's optional `ray:` section: where self-hosted work runs on the cluster.

    Every actor of every backend listed in `backends` asks Ray for `num_cpus`, `num_gpus` and `resources`.
    """

    model_config = ConfigDict(extra="forbid")

    backends: list[str] | None = None  # backend names run on actors; default: every backend of kind sdxl
    actors: int | None = Field(default=None, ge=1)  # per backend; default: as many as the cluster admits
    num_gpus: float = Field(default=1.0, ge=0)
    num_cpus: float = Field(default=1.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)  # custom resources, e.g. {"sdxl": 1}
    ready_timeout_s: float = Field(default=600.0, gt=0)  # actor start plus model load
    max_job_retries: int = Field(default=1, ge=0, le=3)  # re-runs of a job whose actor died

    def actor_needs(self) -> dict[str, float]:
        """What one actor asks of the cluster, in Ray's resource names (zeros left out)."""
        needs = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: float(v) for k, v in needs.items() if v > 0}


def parse_ray_settings(raw: Mapping[str, Any] | RaySettings | None, *, source: str = "policy") -> RaySettings:
    """`ray:` mapping -> RaySettings; a bad key or value is a ConfigError naming it."""
    if isinstance(raw, RaySettings):
        return raw
    try:
        return RaySettings.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = "; ".join(f"ray.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        raise ConfigError(f"{source}: invalid `ray:` section: {problems}") from None


def _fmt(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in sorted(resources.items())
             if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
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
            hints.append("start the worker nodes on GPU machines (`ray start ... --num-gpus N`), or set "
                         "`ray: {num_gpus: 0}` in the policy to run on CPUs")
        custom = sorted(set(missing) - {"CPU", "GPU"})
        if custom:
            example = json.dumps({custom[0]: 1})
            hints.append(f"declare them on the nodes, e.g. `ray start ... --resources='{example}'`")
        raise ConfigError(
            f"the Ray cluster cannot host an actor for backend {who}: each actor needs {_fmt(needs)} but the "
            f"cluster has {_fmt({k: cluster.get(k, 0.0) for k in missing})} of it "
            f"(cluster total: {_fmt(cluster)}). Fix: {'; '.join(hints) or 'lower `ray.num_cpus`'}.")
    fit = min((int(cluster[k] / v + _EPS) for k, v in needs.items()), default=len(backends))
    if settings.actors is None:
        per_backend = fit // len(backends)
        if per_backend < 1:
            raise ConfigError(f"the Ray cluster fits {fit} actor(s) of {_fmt(needs)} but {len(backends)} backends "
                              f"({who}) need one each (cluster total: {_fmt(cluster)})")
        return per_backend
    wanted = settings.actors * len(backends)
    if wanted > fit:
        raise ConfigError(f"`ray.actors: {settings.actors}` for backend {who} needs {wanted} actor(s) of "
                          f"{_fmt(needs)}, but the cluster fits only {fit} (cluster total: {_fmt(cluster)})")
    return settings.actors
