"""Routing speed: route 100,000 synthetic jobs under a shipped policy and print jobs/s.

Baseline in the same run: only the per-job work the router cannot avoid (each backend's `estimate()`),
so the ratio shows what rules, budgets, volume shift, objective and reasons add. Target: well under 1 s
per 10,000 jobs. No GPU, no API key, no files: images are header facts made in memory.

    python benchmarks/routing_speed.py [--jobs 100000] [--policy configs/policies/balanced.yaml]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import EditRequest  # noqa: E402
from backends.images import InputImage  # noqa: E402
from configs import POLICIES_DIR  # noqa: E402
from pipeline.jobs import Job  # noqa: E402
from pipeline.routing import InMemorySpend, Router, build_backends, load_policy, plan_jobs  # noqa: E402

PROMPTS = [
    "Replace the background with a white studio backdrop",
    "Swap the badge text for 'SOLDES'",
    "Place a lamp here",
    "Combine the product with the kitchen scene and the logo",
    "Ten colour variants of this ad",
]
TAGS = [("ecommerce", "product"), ("marketing",), ("localisation", "text"), ("prototype",), ()]


def synthetic_jobs(count: int, seed: int = 0) -> list[Job]:
    rng = random.Random(seed)
    image = InputImage(name="p.png", format="png", width=512, height=512, nbytes=200_000, has_alpha=False)
    mask = InputImage(name="m.png", format="png", width=512, height=512, nbytes=4_000, has_alpha=True)
    jobs = []
    for i in range(count):
        k = rng.randrange(5)
        images = (image,) * (3 if k == 3 else 1)
        req = EditRequest(
            prompt=PROMPTS[k],
            images=images,
            mask=None if k in (1, 3) and i % 2 else mask,
            quality=rng.choice(["low", "medium", "high", "auto"]),
            n=1 + (k == 4) * rng.randrange(10),
            size=rng.choice(["1024x1024", "1536x1024", "auto"]),
            job_id=f"j{i}",
        )
        jobs.append(Job(id=f"j{i}", request=req, tags=TAGS[k]))
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--policy", type=Path, default=POLICIES_DIR / "balanced.yaml")
    args = ap.parse_args(argv)
    policy = load_policy(args.policy)
    backends = build_backends(policy)
    jobs = synthetic_jobs(args.jobs)
    at = datetime(2026, 9, 15, tzinfo=UTC)

    start = time.perf_counter()
    for job in jobs:
        for b in backends.values():
            b.estimate(job.request)
    baseline = time.perf_counter() - start

    router = Router(policy, backends, InMemorySpend())
    start = time.perf_counter()
    for job in jobs:
        router.route(job, at=at)
    routing = time.perf_counter() - start

    start = time.perf_counter()
    summary = plan_jobs(policy, backends, jobs, at=at, keep_decisions=False)
    planning = time.perf_counter() - start

    n = len(jobs)
    print(f"policy {args.policy.name}, {n:,} synthetic jobs, {len(backends)} backends")
    print(f"  baseline (estimate() on every backend): {n / baseline:>10,.0f} jobs/s  {baseline / n * 1e4:.3f} s/10k")
    print(
        f"  Router.route:                           {n / routing:>10,.0f} jobs/s  {routing / n * 1e4:.3f} s/10k"
        f"  ({routing / baseline:.2f}x baseline)"
    )
    print(
        f"  plan (route + record + comparisons):    {n / planning:>10,.0f} jobs/s  {planning / n * 1e4:.3f} s/10k"
        f"  ({planning / baseline:.2f}x baseline)"
    )
    split = ", ".join(f"{k} {t.jobs}" for k, t in summary.split.items())
    print(f"  split: {split}, held {summary.held}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
