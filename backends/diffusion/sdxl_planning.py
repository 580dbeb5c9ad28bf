"""SDXL jobs before any model runs: what one will cost (`estimate`) and which can share one pipeline call
(`batch_key`), from the settings and the inputs' header facts. Never loads the model or imports torch.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from backends import canvas as px
from backends.base import CostEstimate, EditRequest
from backends.diffusion import speeds
from backends.diffusion.sdxl_settings import Settings, Tier
from backends.pricing import gpu_cost


def rate_key(s: Settings) -> tuple:
    """Which measured speed an estimate uses: this model on this device and dtype."""
    return ("sdxl", s.model, s.device, s.dtype)


def work_units(tier: Tier, work_size: tuple[int, int], n: int) -> float:
    """UNet work of one call in guided-step x megapixel x image units (no CFG halves the UNet batch)."""
    mp = work_size[0] * work_size[1] / px.MEGAPIXEL
    return max(1, tier.steps_run) * mp * n * (1.0 if tier.guided else 0.5)


def estimate(s: Settings, request: EditRequest) -> CostEstimate:
    """What the job will cost, from its settings and header facts only."""
    tier_name, tier = s.tier(request.quality if request.quality in ("low", "medium", "high") else "auto")
    first = request.images[0] if request.images else None
    geom = px.plan_geometry(
        request.size if _plain_size(request.size) else "auto",
        first.width if first else 1024,
        first.height if first else 1024,
        target_megapixels(s),
    )
    n = request.n if isinstance(request.n, int) and request.n > 0 else 1
    units = work_units(tier, geom.work_size, n)
    speed = speeds.speed_for("sdxl", s, rate_key(s))
    seconds = units * speed.seconds
    usd = gpu_cost(seconds, s.gpu_cost)
    basis = (
        f"{n} image(s) x {tier.steps_run} steps ({tier_name}{', CFG' if tier.guided else ''}) at "
        f"{geom.work_size[0]}x{geom.work_size[1]} = {units:.2f} step-MP x {speed.label} = "
        f"{seconds:.2f} GPU-s x {s.gpu_cost.describe()} = ${usd:.5f}"
    )
    return CostEstimate(usd=usd, basis=basis, seconds=seconds)


def batch_key(s: Settings, request: EditRequest) -> Hashable | None:
    """Jobs with equal keys can share one pipeline call: same working size, tier (steps, guidance, strength,
    LoRA) and mask mode, and no reference images. None: run this job alone. Never loads the model.

    The output format, n, seed and prompt may differ: they are per job in a batched call."""
    if len(request.images) != 1 or not isinstance(request.quality, str):
        return None  # reference images go through the IP-Adapter one job at a time
    if request.partial_images is not None:
        return None  # a streamed job runs alone: its client leaving can then stop the call
    if request.mask is not None:
        mode = "given"
    elif s.mask_inference is not None:
        mode = "inferred"
    elif s.maskless == "img2img":
        mode = "img2img"
    else:
        return None  # refused; edit() says why
    try:
        tier_name, tier = s.tier(request.quality if request.quality in ("low", "medium", "high") else "auto")
        first = request.images[0]
        geom = px.plan_geometry(request.size, first.width, first.height, target_megapixels(s))
    except (KeyError, ValueError, AttributeError, TypeError):
        return None  # invalid: edit() names the field
    return ("sdxl", geom.work_size, tier_name, tier, mode)


def target_megapixels(settings: Settings) -> float:
    """Configured, else the loaded model's native area when this process has it, else SDXL's 1.0."""
    if settings.target_megapixels is not None:
        return settings.target_megapixels
    from backends.diffusion import runtime as rt  # light: torch is imported inside its functions only

    loaded = rt.cached(settings)
    return loaded.native_megapixels if loaded is not None else 1.0


def _plain_size(size: Any) -> bool:
    try:
        return size == "auto" or px.parse_size(size) is not None
    except (ValueError, AttributeError):
        return False
