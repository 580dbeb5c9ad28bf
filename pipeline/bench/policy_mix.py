"""Monthly cost of a representative job mix under each shipped policy, at each volume.

Each policy's own `Router` and backends decide and estimate (their rates, their tiers), with an `InMemorySpend`
that fills up as the month goes, so budgets and volume shifts act as they would. Routing every job of a
1M-edit month would take long, so the month is cut into `SEGMENTS` equal slices: in each slice the mix is routed
once against the spend so far, and each routed job counts for its share of the slice, but never for more than
its backend's budget still holds (the rest is routed again, so overflow and stop act at the right amount). Volume
shift thresholds are thus honoured to within one slice (2% of the volume), budgets exactly.

The default mix (`synthetic_mix`) is production-sized (1024^2 inputs), built from the five use cases of DESIGN.md;
`--manifest` routes a real manifest instead (its images' real sizes then drive the estimates).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from backends.base import EditRequest
from backends.images import InputImage
from pipeline.jobs import Job

log = logging.getLogger(__name__)
SEGMENTS = 50
PLOT_VOLUMES = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
MONTH_START = datetime(2026, 9, 1, tzinfo=UTC)

# (use case, jobs per 100 edits' worth, request fields, tags). Edits = jobs x n.
MIX_SPEC: tuple[tuple[str, int, dict, tuple[str, ...]], ...] = (
    ("ecommerce-background", 40, {"quality": "medium", "size": "1024x1024", "mask": True}, ("ecommerce", "background")),
    ("ecommerce-hero", 10, {"quality": "high", "size": "1024x1024", "mask": True}, ("ecommerce", "hero")),
    ("marketing-variants", 5, {"quality": "medium", "size": "1536x1024", "n": 4}, ("marketing", "variants")),
    ("compositing", 5, {"quality": "high", "size": "1024x1024", "images": 3}, ("compositing", "brand")),
    (
        "localisation-badge",
        10,
        {"quality": "high", "size": "1024x1024", "mask": True},
        ("localisation", "text", "logo"),
    ),
    ("prototyping", 15, {"quality": "low", "size": "1024x1024", "mask": True}, ("prototyping",)),
)


def _image(name: str, w: int = 1024, h: int = 1024, alpha: bool = False) -> InputImage:
    # Metadata only: routing and estimates read format and size, never pixels.
    return InputImage(name=name, format="png", width=w, height=h, nbytes=1_500_000, has_alpha=alpha)


def synthetic_mix() -> list[tuple[Job, int]]:
    """One job per use case, weighted by how many jobs of it a 100-edit slice of the month holds."""
    jobs = []
    for case, count, spec, tags in MIX_SPEC:
        w, h = (int(v) for v in spec["size"].split("x"))
        images = tuple(_image(f"{case}-{k}.png", w, h) for k in range(spec.get("images", 1)))
        mask = _image(f"{case}-mask.png", w, h, alpha=True) if spec.get("mask") else None
        req = EditRequest(
            prompt=f"{case.replace('-', ' ')} edit",
            images=images,
            mask=mask,
            size=spec["size"],
            quality=spec["quality"],
            n=spec.get("n", 1),
            job_id=case,
        )
        jobs.append((Job(id=case, request=req, tags=tags), count))
    return jobs


def write_manifest(folder: Path) -> Path:
    """The synthetic mix as a manifest with real (flat grey) images, one line per job of a 100-edit slice, so
    `editroute plan FOLDER/mix.jsonl --policy P --monthly-volume N` routes exactly this mix:
    `python -m pipeline.bench.policy_mix FOLDER`."""
    import json

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for case, count, spec, tags in MIX_SPEC:
        w, h = (int(v) for v in spec["size"].split("x"))
        paths = []
        for k in range(spec.get("images", 1)):
            paths.append(f"{case}-{k}.png")
            Image.new("RGB", (w, h), (120 + 20 * k, 120, 120)).save(folder / paths[-1])
        entry = {"prompt": f"{case.replace('-', ' ')} edit", "images": paths, "size": spec["size"]}
        entry.update(quality=spec["quality"], n=spec.get("n", 1), tags=list(tags))
        if spec.get("mask"):
            mask = Image.new("RGBA", (w, h), (0, 0, 0, 255))
            mask.paste((0, 0, 0, 0), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
            mask.save(folder / f"{case}-mask.png")
            entry["mask"] = f"{case}-mask.png"
        lines += [json.dumps({"id": f"{case}-{i}", **entry}) for i in range(count)]
    path = folder / "mix.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def describe_mix() -> str:
    total = sum(c * s.get("n", 1) for _, c, s, _ in MIX_SPEC)
    parts = [
        f"{c * s.get('n', 1) * 100 // total}% {case} ({s['quality']} {s['size']}"
        + (f", n={s['n']}" if s.get("n") else "")
        + (f", {s['images']} inputs" if s.get("images") else "")
        + (", masked" if s.get("mask") else "")
        + ")"
        for case, c, s, _ in MIX_SPEC
    ]
    return "synthetic mix (1024^2 inputs): " + "; ".join(parts)


@dataclass
class PolicyMix:
    mix: str
    edits_per_pass: int
    monthly: dict[str, dict[int, Decimal]] = field(default_factory=dict)  # policy -> volume -> USD
    shares: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # policy -> volume -> backend share
    held: dict[str, dict[int, float]] = field(default_factory=dict)  # share of edits no backend took
    skipped: dict[str, str] = field(default_factory=dict)  # policy -> why it could not be costed


def _weights(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _budget_room(policy, backend: str, spend, at: datetime, per_job: Decimal) -> Decimal | None:
    """Jobs at `per_job` that still fit in `backend`'s tightest budget; None when it has no budget."""
    rooms = [
        (b.limit_usd - spend.spent(backend, b.period, at)) / per_job
        for b in policy.budgets
        if b.backend == backend and per_job > 0
    ]
    return Decimal(math.floor(min(rooms))) if rooms else None


def simulate(router, mix: list[tuple[Job, int]], volume: int, spend) -> tuple[Decimal, Counter, float]:
    """Route `volume` edits of the weighted mix through one month; returns USD, edits per backend, edits held.

    A routed job stands for all jobs of its kind in the slice, except that no more of them are charged to a
    backend than its budget still holds: the rest are routed again (and overflow or are held, as the policy says).
    """
    edits_per_pass = sum(job.request.n * weight for job, weight in mix)
    segments = max(1, min(SEGMENTS, volume // max(edits_per_pass, 1)))
    total = Decimal(0)
    per_backend: Counter = Counter()
    held = 0.0
    carry = 0.0  # job counts are whole: carry the fractions so thresholds see the right total
    for s, seg_edits in enumerate(_weights(volume, segments)):
        at = MONTH_START + timedelta(days=29.9 * s / segments)
        for job, weight in mix:
            remaining = Decimal(seg_edits * weight) / edits_per_pass  # jobs of this kind in this slice
            for _ in range(8):  # the choice, then its overflow chain
                d = router.route(job, at=at)
                if d.backend is None or d.estimate is None:
                    break
                room = _budget_room(router.policy, d.backend, spend, at, d.estimate.usd)
                take = remaining if room is None else min(remaining, max(room, Decimal(1)))
                carry += float(take)
                whole, carry = int(carry), carry - int(carry)
                usd = d.estimate.usd * take
                spend.record(d.backend, usd, at=at, jobs=whole)
                total += usd
                per_backend[d.backend] += float(take) * job.request.n
                remaining -= take
                if remaining <= 0:
                    break
            if remaining > 0:
                held += float(remaining) * job.request.n
    return total, per_backend, held


def policy_files(given: tuple[Path, ...] | None) -> list[Path]:
    from configs import POLICIES_DIR

    return list(given) if given else sorted(POLICIES_DIR.glob("*.yaml"))


def _variants(name: str, policy, shift_after_usd: Decimal | None) -> list[tuple[str, object]]:
    """The policy as shipped, plus (if it shifts by volume) the same policy shifting after `shift_after_usd`:
    shipped thresholds are demo values, and the point of a volume shift is how cost changes with volume."""
    out: list[tuple[str, object]] = [(name, policy)]
    if shift_after_usd is not None and policy.volume_shift:
        shifts = tuple(
            s.model_copy(update={"after_usd": shift_after_usd, "after_jobs": None}) for s in policy.volume_shift
        )
        out.append((f"{name} (after ${shift_after_usd:,}/month)", policy.model_copy(update={"volume_shift": shifts})))
    return out


def build_policy_mix(options, volumes: tuple[int, ...] | None = None) -> PolicyMix | None:
    """Cost of the mix under each policy at each volume; None when no policy is found."""
    from pipeline.errors import ConfigError
    from pipeline.routing import InMemorySpend, Router, build_backends, load_policy

    files = policy_files(options.policies)
    if not files:
        return None
    if options.manifest is not None:
        from pipeline.jobs import load_jobs

        loaded = load_jobs(options.manifest)
        mix_text = f"manifest {options.manifest} ({len(loaded)} jobs, images at their real sizes)"
        mix = [(job, 1) for job in loaded]
    else:
        mix, mix_text = synthetic_mix(), describe_mix()
    mix = [(replace(job, backend=None), w) for job, w in mix]  # the policy decides, not a pin
    result = PolicyMix(mix=mix_text, edits_per_pass=sum(job.request.n * w for job, w in mix))
    for path in files:
        name = path.stem
        try:
            policy = load_policy(path)
            backends = build_backends(policy)
        except ConfigError as exc:
            result.skipped[name] = str(exc).splitlines()[0]
            log.warning("policy %s skipped: %s", name, exc)
            continue
        wanted = volumes or options.volumes
        extra = {v for v in PLOT_VOLUMES if min(wanted) <= v <= max(wanted)}  # smoother plot lines
        for label, variant in _variants(name, policy, options.shift_after_usd):
            result.monthly[label], result.shares[label], result.held[label] = {}, {}, {}
            for volume in sorted(set(wanted) | extra):
                spend = InMemorySpend()
                usd, per_backend, held = simulate(Router(variant, backends, spend), mix, volume, spend)
                result.monthly[label][volume] = usd
                result.shares[label][volume] = {b: v / volume for b, v in sorted(per_backend.items())}
                result.held[label][volume] = held / volume
        for b in backends.values():
            b.close()
    return result


def markdown_section(pm: PolicyMix, volumes: tuple[int, ...]) -> list[str]:
    from pipeline.bench.cost_output import usd, volume_label

    lines = [
        "## Mixed cost under each shipped policy",
        "",
        f"Job mix: {pm.mix}.",
        "",
        "Each policy's own router, backends and rates (its SDXL `gpu_cost`, not this run's GPU figure); "
        "self-hosted edits are billed per GPU-second, with no fixed cost.",
        "",
        "| policy | " + " | ".join(volume_label(v) for v in volumes) + " |",
        "|---|" + "---:|" * len(volumes),
    ]
    for name, costs in pm.monthly.items():
        lines.append(f"| {name} | " + " | ".join(usd(costs[v]) for v in volumes) + " |")
    lines += [
        "",
        "Share of edits per backend (held = routed nowhere: budget stopped or no capable backend):",
        "",
        "| policy | " + " | ".join(volume_label(v) for v in volumes) + " |",
        "|---|" + "---|" * len(volumes),
    ]
    for name, shares in pm.shares.items():
        cells = []
        for v in volumes:
            parts = [f"{b} {s:.0%}" for b, s in shares[v].items()]
            if pm.held[name][v] >= 0.005:
                parts.append(f"held {pm.held[name][v]:.0%}")
            cells.append(", ".join(parts))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if pm.skipped:
        lines.append("")
    for name, why in pm.skipped.items():
        lines.append(f"- {name}: not costed: {why}")
    return lines + [""]


def crossings(pm: PolicyMix) -> list[tuple[str, str, float, float]]:
    """Where two policies' cost curves cross (log-linear interpolation between volumes)."""
    out = []
    names = list(pm.monthly)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if b.startswith(f"{a} ("):
                continue  # a variant of the same policy: they converge by design
            vols = sorted(pm.monthly[a])
            diff = [float(pm.monthly[a][v] - pm.monthly[b][v]) for v in vols]
            rel = [abs(d) / max(float(pm.monthly[a][v]), 1e-9) for d, v in zip(diff, vols, strict=True)]
            for k in range(len(vols) - 1):
                if diff[k] * diff[k + 1] >= 0 or min(rel[k], rel[k + 1]) < 0.01:
                    continue
                f = diff[k] / (diff[k] - diff[k + 1])
                v = 10 ** (math.log10(vols[k]) + f * (math.log10(vols[k + 1]) - math.log10(vols[k])))
                cost = float(pm.monthly[a][vols[k]]) + f * float(pm.monthly[a][vols[k + 1]] - pm.monthly[a][vols[k]])
                out.append((a, b, v, cost))
    return out


def plot_policies(pm: PolicyMix, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, costs in pm.monthly.items():
        vols = sorted(costs)
        ax.plot(vols, [max(float(costs[v]), 1e-3) for v in vols], "-o", markersize=3, label=name)
    for a, b, v, cost in crossings(pm):
        ax.plot([v], [cost], "kx", markersize=7)
        ax.annotate(f"{a} = {b}\n{v / 1000:.3g}k", (v, cost), fontsize=6, textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("edits per month (mix)")
    ax.set_ylabel("USD per month")
    ax.set_title("Mixed cost per policy (x: curves cross; held jobs cost nothing, see the table)", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m pipeline.bench.policy_mix FOLDER  (writes FOLDER/mix.jsonl and its images)")
    print(write_manifest(Path(sys.argv[1])))
