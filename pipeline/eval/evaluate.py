"""`editroute eval`: run the same sample jobs on every backend (and tier) a policy names, and measure them.

    plan = plan_eval(manifest, policy, tiers=("low", "medium", "high"))   # variants + estimated cost and time
    result = run_eval(plan, out_dir, ClipScorer(model).load())            # runs (ledger), scores each output
    files = write_report(result, out_dir)                                 # eval.md, eval.csv, contact_sheet.png,
                                                                          # quality.yaml
Each (job, backend, tier) is one variant: the job with `quality` set to the tier, `n=1`, its seed (else
`EVAL_SEED`), pinned to the backend (no fallbacks: a failure is measured, not hidden). A variant the backend
cannot run (capabilities) is skipped and said so. Runs go through `pipeline.run.execute` with the eval's own ledger
(`DIR/editroute.db`) and the policy's budgets, so spend is recorded, nothing is paid twice, and a rerun of the
same eval reuses finished runs.
Scores: `pipeline.eval.metrics` (formula there); a failed run scores 0 in the quality block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backends.base import CostEstimate
from pipeline.errors import ConfigError
from pipeline.eval import metrics as qm
from pipeline.jobs import Job, load_jobs
from pipeline.routing import TIERS, Decision, Policy, assess, build_backends, load_policy

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
EVAL_SEED = 0  # a job without a seed gets this one: an eval repeats, and every tier starts from the same noise


@dataclass(frozen=True)
class Variant:
    id: str  # <job id>.<backend>.<tier>
    source: Job
    job: Job  # the variant: tier as quality, n=1, pinned to `backend`
    backend: str
    tier: str
    estimate: CostEstimate | None
    skip: str | None = None  # why this backend cannot run it


@dataclass
class EvalPlan:
    manifest: Path
    policy: Policy
    backends: Mapping[str, Any]
    jobs: list[Job]
    tiers: tuple[str, ...]
    variants: list[Variant]

    @property
    def runnable(self) -> list[Variant]:
        return [v for v in self.variants if v.skip is None]

    @property
    def estimated_usd(self) -> Decimal:
        return sum((v.estimate.usd for v in self.runnable if v.estimate), Decimal(0))

    @property
    def estimated_seconds(self) -> float:
        """Sum of the backends' expected seconds (calls that run in parallel finish sooner)."""
        return sum(v.estimate.seconds or 0.0 for v in self.runnable if v.estimate)

    def by_backend_tier(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.policy.backends:
            for tier in self.tiers:
                vs = [v for v in self.variants if v.backend == name and v.tier == tier]
                run = [v for v in vs if v.skip is None]
                rows.append(
                    {
                        "backend": name,
                        "tier": tier,
                        "runs": len(run),
                        "skipped": len(vs) - len(run),
                        "usd": sum((v.estimate.usd for v in run if v.estimate), Decimal(0)),
                        "seconds": sum(v.estimate.seconds or 0.0 for v in run if v.estimate),
                        "unknown_time": sum(1 for v in run if v.estimate and v.estimate.seconds is None),
                    }
                )
        return rows


@dataclass
class Score:
    variant: Variant
    status: str  # ok | failed | skipped
    error: str | None = None
    cost: Decimal = Decimal(0)
    seconds: float | None = None
    reused: bool = False
    output: Path | None = None
    mask: Path | None = None  # the mask the run used when it was inferred (artifact)
    mask_inferred: bool = False
    clip: float | None = None  # raw cosine
    adherence: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    seam: float | None = None
    preservation: float | None = None
    quality: float | None = None

    def as_row(self) -> dict[str, Any]:
        v = self.variant

        def num(x: float | None, digits: int = 4) -> Any:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return ""
            return "inf" if math.isinf(x) else round(x, digits)

        return {
            "job": v.source.id,
            "backend": v.backend,
            "tier": v.tier,
            "status": self.status,
            "cost_usd": f"{self.cost:.6f}",
            "seconds": num(self.seconds, 3),
            "clip_cosine": num(self.clip),
            "adherence": num(self.adherence),
            "psnr_db": num(self.psnr, 2),
            "ssim": num(self.ssim),
            "seam": num(self.seam),
            "preservation": num(self.preservation),
            "quality": num(self.quality),
            "mask_inferred": self.mask_inferred,
            "reused": self.reused,
            "output": str(self.output) if self.output else "",
            "error": self.skip_or_error,
        }

    @property
    def skip_or_error(self) -> str:
        return self.variant.skip or self.error or ""


@dataclass
class EvalResult:
    plan: EvalPlan
    scores: list[Score]
    clip_model: str
    ledger_path: Path
    spent: Decimal = Decimal(0)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)


# ---- plan ---------------------------------------------------------------------------------------------


def plan_eval(
    manifest: str | Path,
    policy: str | Path | Policy,
    *,
    tiers: Sequence[str] = TIERS,
    backends: Mapping[str, Any] | None = None,
) -> EvalPlan:
    """Every (job, backend, tier) variant with its estimate, or why it is skipped. Cheap: no model, no call."""
    bad = [t for t in tiers if t not in TIERS]
    if bad or not tiers:
        raise ConfigError(f"--tiers: expected some of {', '.join(TIERS)} (got {', '.join(tiers) or 'none'})")
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    jobs = load_jobs(manifest)
    if not jobs:
        raise ConfigError(f"{manifest}: no jobs to evaluate")
    backends = backends if backends is not None else build_backends(policy)
    variants = []
    for job in jobs:
        for name in policy.backends:
            backend = backends[name]
            for tier in tiers:
                vid = f"{job.id}.{name}.{tier}"
                seed = job.request.seed if job.request.seed is not None else EVAL_SEED
                request = replace(job.request, quality=tier, n=1, job_id=vid, seed=seed)
                vjob = replace(job, id=vid, request=request, backend=name)
                estimate, why = assess(backend, backend.capabilities, request)
                variants.append(Variant(vid, job, vjob, name, tier, estimate, why if estimate is None else None))
    return EvalPlan(Path(manifest), policy, backends, jobs, tuple(tiers), variants)


# ---- run and score --------------------------------------------------------------------------------------


def run_eval(plan: EvalPlan, out_dir: str | Path, scorer: Any) -> EvalResult:
    """Run every runnable variant (recorded in `DIR/editroute.db`), then score each output.
    `scorer` has `cosine(image, text) -> float` (a loaded `ClipScorer`)."""
    from pipeline.ledger import Ledger
    from pipeline.run import ExecContext, LocalExecutor, budget_caps, execute_job

    out = Path(out_dir)
    ledger = Ledger.in_dir(out)
    ledger.unknown_outcome_hold_s = plan.policy.unknown_outcome_hold_s
    ledger.recover_orphans()
    engine = LocalExecutor(plan.backends)
    caps = budget_caps(plan.policy)
    ctx = ExecContext(
        ledger=ledger,
        executor=engine,
        out_dir=out / RUNS_DIR,
        backends=plan.backends,
        caps_for=lambda name: caps.get(name, ()),
        retry_failed=True,
    )

    def one(v: Variant):
        decision = Decision(v.id, v.backend, v.estimate, (), (), (f"eval: {v.backend} at quality {v.tier}",))
        return execute_job(v.job, decision, ctx)

    try:
        with ThreadPoolExecutor(max_workers=max(1, engine.capacity()), thread_name_prefix="eval") as pool:
            outcomes = dict(zip([v.id for v in plan.runnable], pool.map(one, plan.runnable), strict=True))
        spent = ledger.total_spent()
    finally:
        engine.close()
        ledger.close()
    scores = []
    sources: dict[str, _Source] = {}
    for v in plan.variants:
        if v.skip is not None:
            scores.append(Score(v, "skipped"))
            continue
        outcome = outcomes[v.id]
        if not outcome.ok or not outcome.outputs:
            scores.append(
                Score(v, "failed", error=outcome.error or "no output", cost=outcome.cost, seconds=outcome.latency_s)
            )
            continue
        score = Score(v, "ok", cost=outcome.cost, reused=outcome.reused, output=outcome.outputs[0])
        timings = (outcome.result or {}).get("timings") or {}
        score.seconds = timings.get("total_s", outcome.latency_s)
        score.mask = next((p for p in outcome.artifacts if p.name == "mask.png"), None)
        score.mask_inferred = bool(((outcome.result or {}).get("extras") or {}).get("mask_inferred"))
        score_output(score, scorer, sources)
        scores.append(score)
    result = EvalResult(plan, scores, getattr(scorer, "model_id", "?"), out / "editroute.db", spent)
    result.quality = quality_block(scores)
    return result


# a job's input pixels and the edit region of its own mask (None: mask-less), decoded once for all its variants
_Source = tuple[tuple[int, int], np.ndarray, np.ndarray | None]


def _source(job: Job, cache: dict[str, _Source]) -> _Source:
    hit = cache.get(job.id)
    if hit is None:
        image = job.request.images[0].open().convert("RGB")
        mask = job.request.mask
        hit = cache[job.id] = (
            image.size,
            qm.rgb_array(image),
            None if mask is None else qm.edit_region(mask.open(), image.size),
        )
    return hit


def score_output(score: Score, scorer: Any, sources: dict[str, _Source] | None = None) -> None:
    """Fill in the metrics of one finished run (in place); `sources` caches inputs across a job's variants."""
    v = score.variant
    size, in_arr, edit = _source(v.source, {} if sources is None else sources)
    assert score.output is not None
    output = Image.open(score.output).convert("RGB")
    if v.source.request.mask is None and score.mask:  # the mask this run inferred
        edit = qm.edit_region(Image.open(score.mask), size)
    out_arr = qm.rgb_array(qm.align(output, size))
    if edit is not None and (~edit).any():
        score.psnr = qm.psnr(out_arr, in_arr, ~edit)
        score.ssim = qm.ssim(out_arr, in_arr, ~edit)
        score.preservation = qm.preservation(score.psnr, score.ssim)
    score.seam = qm.seam(out_arr, in_arr, edit)
    score.clip = scorer.cosine(output, v.source.request.prompt)
    score.adherence = qm.adherence(score.clip)
    score.quality = qm.quality_score(score.adherence, score.preservation, score.seam)


def quality_block(scores: Sequence[Score]) -> dict[str, dict[str, float]]:
    """Mean quality per backend and tier over the jobs it ran; a failed run counts 0, a skipped one not at all."""
    acc: dict[tuple[str, str], list[float]] = {}
    for s in scores:
        if s.status == "skipped" or (s.status == "ok" and s.quality is None):
            continue
        acc.setdefault((s.variant.backend, s.variant.tier), []).append(s.quality if s.status == "ok" else 0.0)
    block: dict[str, dict[str, float]] = {}
    for (name, tier), values in acc.items():
        block.setdefault(name, {})[tier] = round(sum(values) / len(values), 3)
    return block


__all__ = ["EvalPlan", "EvalResult", "Score", "Variant", "plan_eval", "quality_block", "run_eval", "score_output"]
