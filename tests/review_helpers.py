"""A real run to review: jobs through `run_batch` on two `kind: function` backends (a cheap self-hosted one and a
dear API one, each pinned for half the jobs), a policy that routes masked product edits by price and quality, and
a reviewer who accepts or rejects by backend."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.ledger import Ledger
from pipeline.routing import load_policy
from pipeline.run import NullProgress, run_batch
from tests.imagery import gradient, mask_image

POLICY = """
backends:
  cheap: {kind: function, hosting: self-hosted, cost_per_image: "0.004"}
  good: {kind: function, cost_per_image: "0.21"}
quality:
  cheap: 0.8
  good: 0.85
objective: {type: cheapest, min_quality: 0.6}
"""


def write_inputs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = folder / "shelf.png", folder / "shelf-mask.png"
    gradient(96, 64).save(image)
    mask_image(96, 64).save(mask)
    return image, mask


def write_jobs(folder: Path, name: str, count: int, *, pins: tuple[str | None, ...] = (None,), tier="medium") -> Path:
    """`count` masked product jobs; job k is pinned to `pins[k % len(pins)]` (None: routed by the policy)."""
    image, mask = write_inputs(folder / "img")
    lines = []
    for k in range(count):
        entry = {
            "id": f"{name}{k:03d}",
            "image": str(image),
            "mask": str(mask),
            "prompt": f"Replace the background with a white studio backdrop, variant {k}",
            "quality": tier,
            "tags": ["product", "ecommerce"] if k % 2 == 0 else ["product"],
            "seed": k,
        }
        if pins[k % len(pins)] is not None:
            entry["backend"] = pins[k % len(pins)]
        lines.append(json.dumps(entry))
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_policy(folder: Path, extra: str = "", name: str = "policy.yaml") -> Path:
    path = folder / name
    path.write_text(POLICY + extra)
    return path


def make_run(folder: Path, per_backend: int = 40) -> Path:
    """A finished run of `per_backend` jobs on each backend; returns its --out folder."""
    manifest = write_jobs(folder, "job", 2 * per_backend, pins=("cheap", "good"))
    out = folder / "out"
    result = run_batch(manifest, load_policy(write_policy(folder)), out, progress=NullProgress())
    assert result.ok, result.tally.as_dict()
    return out


def review_by_backend(out: Path, accepted: dict[str, int], reviewer: str = "dana") -> None:
    """Accept the first `accepted[backend]` jobs of each backend, reject the rest (in job order)."""
    from pipeline.review import Catalog

    catalog = Catalog(out)
    try:
        catalog.sync()
        seen: dict[str, int] = {}
        for job in catalog.ledger.review_page(_all(), limit=10_000):
            k = seen[job["backend"]] = seen.get(job["backend"], 0) + 1
            decision = "accept" if k <= accepted[job["backend"]] else "reject"
            catalog.ledger.record_review(job["job_id"], reviewer, decision)
    finally:
        catalog.close()


def _all():
    from pipeline.ledger import ReviewFilter

    return ReviewFilter()


def ledger_of(out: Path) -> Ledger:
    return Ledger.in_dir(out)
