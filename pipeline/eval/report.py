"""The eval's files: `eval.md` (tables), `eval.csv` (one row per run), `contact_sheet.png` (one row per job) and
`quality.yaml` (a `quality:` block a policy includes with `quality_file:`)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import yaml
from PIL import Image

from pipeline.eval import contact_sheet as cs
from pipeline.eval.evaluate import EvalResult, Score
from pipeline.eval.metrics import FORMULA
from pipeline.run import atomic_write_bytes

CSV_FIELDS = [
    "job",
    "backend",
    "tier",
    "status",
    "cost_usd",
    "seconds",
    "clip_cosine",
    "adherence",
    "psnr_db",
    "ssim",
    "seam",
    "preservation",
    "quality",
    "mask_inferred",
    "reused",
    "output",
    "error",
]


def quality_yaml(result: EvalResult, *, stand_ins: bool = False) -> str:
    """The `quality:` block with its provenance: `source: eval`, or `source: stand-ins` for an eval on stand-ins,
    which a policy refuses to route on (`pipeline.routing.quality_file`)."""
    plan = result.plan
    head = [
        f"# Measured by `editroute eval {plan.manifest}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{len(plan.jobs)} job(s), tiers {', '.join(plan.tiers)}, CLIP {result.clip_model}.",
        "# Per backend and tier: the mean over the jobs it ran (a failed run counts 0); samples: runs scored.",
        f"# {FORMULA}",
    ]
    if stand_ins:
        head += [
            "# STAND-INS: fake backends and a random-weight CLIP; these scores mean nothing about real backends.",
            "# A policy refuses this file unless it sets `allow_stand_in_quality: true` (demos and tests only).",
        ]
    else:
        head.append("# Include it in a policy with `quality_file: <path to this file>`; it overrides declared scores.")
    runs: dict[str, dict[str, dict[str, int]]] = {}
    for s in result.scores:
        if s.status != "skipped" and not (s.status == "ok" and s.quality is None):
            entry = runs.setdefault(s.variant.backend, {}).setdefault(s.variant.tier, {"runs": 0})
            entry["runs"] += 1
    body = yaml.safe_dump(
        {"source": "stand-ins" if stand_ins else "eval", "quality": result.quality, "samples": runs},
        sort_keys=False,
        default_flow_style=None,
    )
    return "\n".join(head) + "\n" + body


def csv_text(scores: list[Score]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for s in scores:
        writer.writerow(s.as_row())
    return buf.getvalue()


def _cell(value) -> str:
    return "" if value in ("", None) else str(value)


def markdown(result: EvalResult, files: dict[str, Path]) -> str:
    plan = result.plan
    lines = [
        f"# editroute eval: {plan.manifest.name}",
        "",
        f"- policy: `{plan.policy.source}`",
        f"- jobs: {len(plan.jobs)}; tiers: {', '.join(plan.tiers)}; "
        f"runs: {len(plan.runnable)} ({len(plan.variants) - len(plan.runnable)} skipped)",
        f"- estimated before running: ${plan.estimated_usd:.4f}, {plan.estimated_seconds:.1f} s of backend time",
        f"- spent (ledger `{result.ledger_path}`): ${result.spent:.4f}",
        f"- prompt adherence model: `{result.clip_model}`",
        f"- {FORMULA}",
        "",
        "## Quality per backend and tier (the `quality:` block)",
        "",
        "| backend | tier | runs | failed | skipped | mean quality | mean cost $ | mean seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in plan.policy.backends:
        for tier in plan.tiers:
            ss = [s for s in result.scores if s.variant.backend == name and s.variant.tier == tier]
            ran = [s for s in ss if s.status != "skipped"]
            q = result.quality.get(name, {}).get(tier)
            mean_cost = sum((s.cost for s in ran), start=type(result.spent)(0)) / len(ran) if ran else None
            secs = [s.seconds for s in ran if s.seconds is not None]
            lines.append(
                f"| {name} | {tier} | {len(ran)} | {sum(s.status == 'failed' for s in ss)} | "
                f"{len(ss) - len(ran)} | {'' if q is None else f'{q:.3f}'} | "
                f"{'' if mean_cost is None else f'{mean_cost:.5f}'} | "
                f"{f'{sum(secs) / len(secs):.2f}' if secs else ''} |"
            )
    lines += [
        "",
        "## Every run",
        "",
        "| job | backend | tier | status | cost $ | adherence | PSNR dB | SSIM | seam | quality | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in result.scores:
        r = s.as_row()
        note = s.skip_or_error.replace("|", "/")[:120] or ("mask inferred" if s.mask_inferred else "")
        lines.append(
            f"| {r['job']} | {r['backend']} | {r['tier']} | {r['status']} | {r['cost_usd']} | "
            f"{_cell(r['adherence'])} | {_cell(r['psnr_db'])} | {_cell(r['ssim'])} | {_cell(r['seam'])} | "
            f"{_cell(r['quality'])} | {note} |"
        )
    lines += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in files.items()] + [""]
    return "\n".join(lines)


def sheet(result: EvalResult) -> Image.Image:
    plan = result.plan
    by_id = {s.variant.id: s for s in result.scores}
    rows = []
    for job in plan.jobs:
        image = job.request.images[0].open()
        mask = job.request.mask.open() if job.request.mask is not None else None
        if mask is not None:
            mask_cell = cs.Cell("mask (white=edit)", cs.mask_preview(mask))
        else:  # show what a mask-inferring backend derived, if one ran
            inferred = next((s for s in result.scores if s.variant.source.id == job.id and s.mask), None)
            mask_cell = (
                cs.Cell(f"no mask; inferred\nby {inferred.variant.backend}", cs.mask_preview(Image.open(inferred.mask)))
                if inferred and inferred.mask
                else cs.Cell("no mask", None)
            )
        row = [cs.Cell(f"input\n{job.id}", image), mask_cell]
        for name in plan.policy.backends:
            for tier in plan.tiers:
                s = by_id[f"{job.id}.{name}.{tier}"]
                if s.status == "ok" and s.output is not None:
                    q = "" if s.quality is None else f"q={s.quality:.2f}"
                    label, img = (
                        f"{name}/{tier}\n{q}{' mask inferred' if s.mask_inferred else ''}",
                        Image.open(s.output),
                    )
                else:
                    label, img = f"{name}/{tier}\n{s.status}", None
                row.append(cs.Cell(label, img))
        rows.append(row)
    return cs.render(rows)


def write_report(result: EvalResult, out_dir: str | Path, *, stand_ins: bool = False) -> dict[str, Path]:
    out = Path(out_dir)
    files = {
        "table": out / "eval.md",
        "csv": out / "eval.csv",
        "contact_sheet": out / "contact_sheet.png",
        "quality": out / "quality.yaml",
        "ledger": result.ledger_path,
    }
    atomic_write_bytes(files["csv"], csv_text(result.scores).encode())
    buf = io.BytesIO()
    sheet(result).save(buf, format="PNG")
    atomic_write_bytes(files["contact_sheet"], buf.getvalue())
    atomic_write_bytes(files["quality"], quality_yaml(result, stand_ins=stand_ins).encode())
    atomic_write_bytes(files["table"], markdown(result, files).encode())
    return files
