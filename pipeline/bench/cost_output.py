"""Write a `CostReport`: markdown tables, CSV files and log-log PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import csv
import logging
import math
from datetime import date
from decimal import Decimal
from pathlib import Path

from pipeline.bench.cost import BASELINE_MODEL, REFERENCE_SIZE, CostReport, Plan, headline

log = logging.getLogger(__name__)


def usd(value: Decimal | float, small: bool = False) -> str:
    v = float(value)
    if 0 < abs(v) < 0.01:
        return f"${v:.5f}"
    if small or abs(v) < 1:
        return f"${v:.4f}"
    return f"${v:,.0f}"


def volume_label(v: int) -> str:
    return f"{v // 1_000_000}M" if v >= 1_000_000 and v % 1_000_000 == 0 else f"{v / 1000:g}k"


def markdown(report: CostReport) -> str:
    vols = report.volumes
    lines = [
        f"# editroute cost benchmark ({date.today().isoformat()})",
        "",
        f"Token prices as of {report.prices_as_of}; GPU rates as of {report.gpu_as_of} (configs/prices.yaml).",
        f"**SDXL seconds per image: {report.figure.label}.**",
        "",
    ]
    lines += [f"- {n}" for n in report.notes] + [""]

    lines += ["## Headline: 100,000 high-quality 1024x1024 edits a month", "", "| | USD / month |", "|---|---:|"]
    lines += [f"| {k} | {usd(v)} |" for k, v in headline(report).items()] + [""]

    lines += [
        "## Cost per image",
        "",
        "API input = one 1024x1024 input image (each model's input rule: 194 tokens for gpt-image-1, 388 (ESTIMATE)"
        " for 2.x) + a ~25-token prompt.",
        "",
        "| backend | how paid | tier | size | output / GPU | input | total | basis |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in report.per_image:
        name = report.labels.get(r.backend, r.backend)
        lines.append(
            f"| {name} | {r.scenario} | {r.tier} | {r.size} | {usd(r.output_usd, True)} | "
            f"{usd(r.input_usd, True)} | {usd(r.total_usd, True)} | {r.basis} |"
        )
    lines.append("")

    lines += per_accepted_section(report)

    lines += [
        f"## Monthly cost at {REFERENCE_SIZE}",
        "",
        "| tier | plan | " + " | ".join(volume_label(v) for v in vols) + " |",
        "|---|---|" + "---:|" * len(vols),
    ]
    for tier, plans in report.plans.items():
        for p in plans:
            lines.append(f"| {tier} | {p.name} | " + " | ".join(usd(p.monthly(v)) for v in vols) + " |")
    lines.append("")
    notes = {p.name: p.note for plans in report.plans.values() for p in plans if p.note}
    lines += [f"- *{k}*: {v}" for k, v in notes.items()] + [""]

    lines += [
        "## Break-even: monthly volume from which self-hosting is cheaper",
        "",
        "Same tier on both sides; 'never' = the API stays cheaper even at the card's full capacity.",
        "",
        "| tier | API | self-hosted | break-even edits / month |",
        "|---|---|---|---:|",
    ]
    for tier, api, sp, vol in report.break_evens:
        lines.append(f"| {tier} | {api} | {sp} | {'never' if vol is None else f'{vol:,}'} |")
    lines.append("")
    if report.policy_mix is not None:
        from pipeline.bench.policy_mix import markdown_section

        lines += markdown_section(report.policy_mix, vols)
    return "\n".join(lines) + "\n"


def per_accepted_section(report: CostReport) -> list[str]:
    lines = [
        f"## Cost per accepted edit ({REFERENCE_SIZE})",
        "",
        "What a usable image costs when rejected edits are run again until one is accepted: per image / acceptance "
        "(on average 1 / acceptance runs). Acceptance is the share people accept in `editroute review`; the time "
        "they spend judging rejects is not included.",
        "",
    ]
    if not report.per_accepted:
        return lines + [
            "Not computed: no acceptance given. Pass `--acceptance NAME=RATE` (a model id or `sdxl`; e.g. "
            "`--acceptance gpt-image-1=0.95 --acceptance sdxl=0.6`) from `editroute review --export`.",
            "",
        ]
    lines += [
        "| backend | how paid | tier | per image | acceptance | runs per accepted | per accepted edit |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for a in report.per_accepted:
        r = a.row
        lines.append(
            f"| {r.backend} | {r.scenario} | {r.tier} | {usd(r.total_usd, True)} | {a.acceptance:.0%} | "
            f"{a.runs:.2f} | {usd(a.usd, True)} |"
        )
    return lines + [""]


def write_csv(report: CostReport, out: Path) -> list[Path]:
    per_image = out / "cost_per_image.csv"
    with per_image.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "backend",
                "scenario",
                "tier",
                "size",
                "output_usd",
                "input_usd",
                "total_usd",
                "seconds",
                "basis",
                "seconds_source",
            ]
        )
        for r in report.per_image:
            w.writerow(
                [
                    r.backend,
                    r.scenario,
                    r.tier,
                    r.size,
                    r.output_usd,
                    r.input_usd,
                    r.total_usd,
                    "" if r.seconds is None else f"{r.seconds:.3f}",
                    r.basis,
                    report.figure.label if r.backend == "sdxl" else "",
                ]
            )
    monthly = out / "cost_monthly.csv"
    with monthly.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "tier", "plan", *[f"usd_at_{v}" for v in report.volumes]])
        for tier, plans in report.plans.items():
            for p in plans:
                w.writerow(["backend", tier, p.name, *[p.monthly(v).quantize(Decimal("0.01")) for v in report.volumes]])
        if report.policy_mix is not None:
            for name, costs in report.policy_mix.monthly.items():
                w.writerow(["policy", "mix", name, *[costs[v].quantize(Decimal("0.01")) for v in report.volumes]])
        for tier, api, sp, vol in report.break_evens:
            w.writerow(["break_even", tier, f"{api} vs {sp}", "never" if vol is None else vol])
    accepted = out / "cost_per_accepted.csv"
    with accepted.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["backend", "scenario", "tier", "size", "per_image_usd", "acceptance", "runs", "per_accepted_usd"])
        for a in report.per_accepted:
            r = a.row
            w.writerow([r.backend, r.scenario, r.tier, r.size, r.total_usd, a.acceptance, f"{a.runs:.4f}", a.usd])
    return [per_image, monthly, accepted]


def _curve(volumes: list[float], plan: Plan) -> list[float]:
    return [float(plan.monthly(int(v))) for v in volumes]


def log_volumes(lo: int, hi: int, n: int = 80) -> list[float]:
    return [round(10 ** (math.log10(lo) + i * (math.log10(hi) - math.log10(lo)) / (n - 1))) for i in range(n)]


def plot_backends(report: CostReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = log_volumes(min(report.volumes), max(report.volumes))
    tiers = list(report.plans)
    fig, axes = plt.subplots(1, len(tiers), figsize=(5.2 * len(tiers), 4.4), sharey=True)
    for ax, tier in zip(axes, tiers, strict=True):
        for p in report.plans[tier]:
            style = "--" if p.name.startswith("sdxl") else "-"
            ax.plot(vols, _curve(vols, p), style, label=p.name, linewidth=1.4)
        plans = {p.name: p for p in report.plans[tier]}
        for t, api, _sp, vol in report.break_evens:
            if t == tier and vol:
                ax.plot([vol], [float(plans[api].monthly(vol))], "ko", markersize=4)
                if api != BASELINE_MODEL:
                    continue
                ax.annotate(
                    f"{BASELINE_MODEL} (retired): {vol / 1000:.3g}k",
                    (vol, float(plans[api].monthly(vol))),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, -9),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{tier} tier, {REFERENCE_SIZE}")
        ax.set_xlabel("edits per month")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("USD per month")
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Monthly cost vs volume (dots: break-even vs fixed-cost self-hosting). SDXL: "
        f"{report.figure.seconds:.2f} s/image on {report.figure.card}, "
        f"{'measured' if report.figure.source == 'measured' else 'declared (' + report.figure.source + ')'}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_all(report: CostReport, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "cost.md"
    table.write_text(markdown(report), encoding="utf-8")
    written = [table, *write_csv(report, out)]
    if plots:
        written.append(plot_backends(report, out / "cost_vs_volume_backends.png"))
        if report.policy_mix is not None:
            from pipeline.bench.policy_mix import plot_policies

            written.append(plot_policies(report.policy_mix, out / "cost_vs_volume_policies.png"))
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written
