"""`editroute eval`: measured quality. Owns running a manifest on every backend and tier of a policy
(evaluate.py), the scores (metrics.py: prompt adherence through CLIP, preservation, seams; clip_score.py), and
the report it writes: `quality.yaml` for the policy's `quality_file:`, CSV, Markdown and a contact sheet.

Runs go through `pipeline.run` with the eval's own ledger; below it: run, ledger, routing. torch loads only
when CLIP scores."""

from pipeline.eval.clip_score import DEFAULT_CLIP_MODEL, ClipScorer
from pipeline.eval.evaluate import EvalPlan, EvalResult, Score, Variant, plan_eval, quality_block, run_eval
from pipeline.eval.metrics import FORMULA, quality_score
from pipeline.eval.report import write_report

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "FORMULA",
    "ClipScorer",
    "EvalPlan",
    "EvalResult",
    "Score",
    "Variant",
    "plan_eval",
    "quality_block",
    "quality_score",
    "run_eval",
    "write_report",
]
