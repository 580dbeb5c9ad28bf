"""The schema of the policy's `ray:` section (pure pydantic, no Ray import): it lives with the policy so the
policy needs nothing above routing; the cluster wing (`pipeline.cluster`) reads it and checks it against the
cluster before any actor starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError


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
        problems = "; ".join(
            f"ray.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise ConfigError(f"{source}: invalid `ray:` section: {problems}") from None
