"""Seconds per SDXL inpaint image on a named GPU, and where that figure came from.

Sources, in order of preference: a `--seconds-per-image` flag; a measurement in `benchmarks/RESULTS.md` (a markdown
table with `card`, `tier`, `size` and `seconds_per_image` columns, as `sdxl_speed.py` writes it); a published figure
declared below (each names its public source). A figure is for the reference job, a 1024x1024 edit at the high
tier (30 steps); other tiers and sizes scale by FLOPs (UNet steps x CFG batch + VAE), which holds while the card
stays compute-bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# TFLOP per 1024x1024 image, counted with torch.utils.flop_counter (benchmarks/sdxl_arch.py `count_flops`).
UNET_CFG_STEP_TF = 13.52  # one guided step = UNet at batch 2
VAE_ENCODE_TF = 4.88
VAE_DECODE_TF = 10.47
STRENGTH = 0.99  # the inpaint checkpoint's recommended strength: the pipeline runs int(steps x strength) steps
# Published figures are for text-to-image, 30 steps, 1024^2: 30 guided steps + one VAE decode.
REFERENCE_T2I_TF = 30 * UNET_CFG_STEP_TF + VAE_DECODE_TF

RESULTS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md"  # in a checkout


@dataclass(frozen=True)
class Tier:
    steps: int
    guidance: bool  # classifier-free guidance doubles the UNet batch


# Stand-alone tier settings (high 30 CFG, medium 20 CFG, low TCD 8 no CFG): `seconds_for`'s default reference;
# the cost model itself reads the SDXL backend's own (`pipeline.bench.cost.sdxl_tiers`).
DEFAULT_TIERS: dict[str, Tier] = {"low": Tier(8, False), "medium": Tier(20, True), "high": Tier(30, True)}


@dataclass(frozen=True)
class Published:
    card: str  # a key of prices.yaml gpu_hourly
    path: str
    seconds: float  # seconds per reference image (30-step 1024^2 text-to-image)
    source: str


def _from_its(its: float) -> float:
    """it/s of guided UNet steps at 1024^2 -> seconds per 30-step image, the VAE at the same efficiency."""
    return 30 / its * REFERENCE_T2I_TF / (30 * UNET_CFG_STEP_TF)


PUBLISHED: tuple[Published, ...] = (
    Published("A100-80GB", "bf16+SDPA (plain diffusers)", 3.31, "huggingface/diffusion-fast, A100, 30 steps 1024^2"),
    Published("A100-80GB", "torch.compile", 2.54, "huggingface/diffusion-fast, A100, 30 steps 1024^2"),
    Published("A100-80GB", "bf16, default attention", 4.63, "huggingface/diffusion-fast, A100, 30 steps 1024^2"),
    Published(
        "H100",
        "fp16 plain PyTorch",
        round(_from_its(14.9), 3),
        "chengzeyi/stable-fast README: 14.9 it/s; VAE at the UNet's FLOP rate, so a lower bound",
    ),
    Published(
        "H100",
        "torch.compile",
        round(_from_its(18.5), 3),
        "chengzeyi/stable-fast README: 18.5 it/s; VAE at the UNet's FLOP rate, so a lower bound",
    ),
    # 20 steps end to end: 4.90 s at 6.67 it/s, so 1.90 s outside the UNet; 30 steps = 30/6.67 + 1.90.
    Published(
        "RTX-4090",
        "fp16 plain PyTorch",
        round(30 / 6.67 + (4.90 - 20 / 6.67), 3),
        "siliconflow/onediff README: 6.67 it/s, 4.90 s end to end at 20 steps",
    ),
)
DEFAULT_CARD = "A100-80GB"


@dataclass(frozen=True)
class SecondsFigure:
    card: str
    seconds: float  # per reference image: 1024x1024, high tier
    source: str  # "flag", "measured", "published"
    detail: str  # human-readable: what, where, when

    @property
    def label(self) -> str:
        """Says whether the figure was measured or declared (a published figure, or the --seconds-per-image flag)."""
        kind = {
            "measured": "MEASURED",
            "published": "DECLARED, published figure, not measured here",
            "flag": "DECLARED by --seconds-per-image",
        }.get(self.source, self.source)
        return f"{self.seconds:.2f} s/image on {self.card} ({kind}: {self.detail})"


def tier_tflop(tier: Tier, size: str = "1024x1024") -> float:
    w, h = (int(v) for v in size.split("x"))
    steps_run = int(tier.steps * STRENGTH)
    unet = steps_run * UNET_CFG_STEP_TF * (1.0 if tier.guidance else 0.5)
    # An inpaint encodes the image and the masked image, then decodes once; cost grows ~ with pixels.
    return (unet + 2 * VAE_ENCODE_TF + VAE_DECODE_TF) * (w * h) / (1024 * 1024)


def seconds_for(
    figure: SecondsFigure, tier: Tier, size: str, reference: Tier | None = None, reference_is_t2i: bool | None = None
) -> float:
    """Scale a reference figure to another tier and size by FLOPs."""
    if reference_is_t2i is None:
        reference_is_t2i = figure.source == "published"
    ref_tf = REFERENCE_T2I_TF if reference_is_t2i else tier_tflop(reference or DEFAULT_TIERS["high"])
    return figure.seconds * tier_tflop(tier, size) / ref_tf


_COLUMN = re.compile(r"[^a-z0-9/]+")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def measured_figures(path: Path = RESULTS_FILE) -> list[SecondsFigure]:
    """Every 1024x1024 high-tier row of any RESULTS.md table with card/tier/size/seconds_per_image columns."""
    if not path.exists():
        return []
    found: list[SecondsFigure] = []
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):  # tables start at column 0 (an indented one is a code block)
            header = None
            continue
        cells = _cells(line)
        names = [_COLUMN.sub("_", c.lower()).strip("_") for c in cells]
        if {"card", "tier", "size", "seconds_per_image"} <= set(names):
            header = names
            continue
        if header is None or set(line.replace("|", "").strip()) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        if row.get("tier") != "high" or row.get("size") != "1024x1024":
            continue
        try:
            seconds = float(row["seconds_per_image"])
        except ValueError:
            continue
        what = ", ".join(f"{k} {row[k]}" for k in ("path", "batch", "date") if row.get(k))
        found.append(SecondsFigure(row["card"], seconds, "measured", f"benchmarks/RESULTS.md ({what})"))
    return found


def resolve(card: str | None, seconds: float | None, results: Path = RESULTS_FILE) -> SecondsFigure:
    """The figure to use: flag, else the fastest measurement on that card, else the card's first published figure."""
    from pipeline.errors import ConfigError

    if seconds is not None:
        if seconds <= 0:
            raise ConfigError(f"--seconds-per-image must be > 0 (got {seconds})")
        if card is None:
            raise ConfigError("--seconds-per-image needs --gpu NAME: the card it was measured on")
        return SecondsFigure(card, seconds, "flag", "--seconds-per-image")
    measured = [f for f in measured_figures(results) if card is None or f.card == card]
    ours = [f for f in measured if "path editroute" in f.detail or "path ours" in f.detail]
    if ours or measured:  # our backend's path when it was measured, else whatever was
        return min(ours or measured, key=lambda f: f.seconds)
    card = card or DEFAULT_CARD
    published = [p for p in PUBLISHED if p.card == card]
    if not published:
        known = ", ".join(sorted({p.card for p in PUBLISHED}))
        raise ConfigError(
            f"no seconds-per-image figure for GPU {card!r}: pass --seconds-per-image "
            f"(published figures exist for {known})"
        )
    p = published[0]
    return SecondsFigure(card, p.seconds, "published", f"{p.path}; {p.source}")


def published_alternatives(primary: SecondsFigure) -> list[SecondsFigure]:
    """The other declared figures, for comparison rows."""
    return [
        SecondsFigure(p.card, p.seconds, "published", f"{p.path}; {p.source}")
        for p in PUBLISHED
        if not (primary.source == "published" and p.card == primary.card and p.seconds == primary.seconds)
    ]
