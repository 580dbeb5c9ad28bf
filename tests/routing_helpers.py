"""Policies over fake backends and in-memory jobs, for the policy, router and plan tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from backends.base import EditRequest
from backends.images import InputImage
from pipeline.jobs import Job
from pipeline.routing import InMemorySpend, Policy, Router, build_backends, load_policy
from tests.imagery import image_bytes, mask_bytes

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs" / "policies").glob("*.yaml"))
EXAMPLES = REPO / "examples"

# Two fake backends: `cheap` (self-hosted-like: one image, mask required, opaque only) and `pricey` (API-like).
TWO_BACKENDS = """
backends:
  cheap:
    kind: function
    hosting: self-hosted
    cost_per_image: 0.002
    capabilities: {max_images: 1, mask_optional: false, transparent_background: false}
  pricey:
    kind: function
    cost_per_image: 0.05
quality:
  cheap: {low: 0.5, medium: 0.6, high: 0.7}
  pricey: {low: 0.7, medium: 0.8, high: 0.9}
"""

_IMG = None
_MASK = None


def write_policy(tmp_path: Path, body: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def make_router(
    tmp_path: Path, extra: str = "", spend: InMemorySpend | None = None, base: str = TWO_BACKENDS
) -> tuple[Router, Policy, InMemorySpend]:
    policy = load_policy(write_policy(tmp_path, textwrap.dedent(base) + textwrap.dedent(extra)))
    spend = spend or InMemorySpend()
    return Router(policy, build_backends(policy), spend), policy, spend


def job(
    id: str = "j1",
    *,
    mask: bool = True,
    images: int = 1,
    tags: tuple[str, ...] = (),
    backend: str | None = None,
    prompt: str = "replace the background",
    **options,
) -> Job:
    global _IMG, _MASK
    _IMG = _IMG or InputImage.from_bytes(image_bytes(64, 64), "img.png")
    _MASK = _MASK or InputImage.from_bytes(mask_bytes(64, 64), "mask.png")
    req = EditRequest(prompt=prompt, images=(_IMG,) * images, mask=_MASK if mask else None, job_id=id, **options)
    return Job(id=id, request=req, tags=tags, backend=backend)
