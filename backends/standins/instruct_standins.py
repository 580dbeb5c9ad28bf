"""Settings that point a `kind: qwen-edit` or `kind: flux2-klein` policy entry at its tiny random-weight stand-in
(for `editroute demo` and `eval --stand-ins`): built once into a cache folder, run on the CPU at a 64x64 working
size with 2 steps, no LoRA and no GPU options. Outputs are noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSTRUCT_KINDS = ("qwen-edit", "flux2-klein")
# Seconds per pass-MP the stand-ins take on 2 CPU cores (measured 2026-12-07: Qwen ~0.6 s per 2-step edit over a
# 64x64 output and a ~1 MP condition image; klein ~0.07 s over 64x64 + 64x64), so plans estimate the stand-in's own
# cost, not a GPU's.
STANDIN_SECONDS = {"qwen-edit": 0.3, "flux2-klein": 5.0}
# what a real deployment may set that the CPU stand-in must not inherit
_DROP = ("lora", "variant", "attention_backend", "first_block_cache", "max_images", "gpu", "distilled")


def instruct_standin_dir(kind: str, cache: Path) -> Path:
    """The stand-in pipeline for `kind`, built under `cache` (once; rebuilt when its recipe changes)."""
    if kind == "qwen-edit":
        from backends.standins.tiny_qwen_edit import RECIPE, build_tiny_qwen_edit

        return build_tiny_qwen_edit(cache / f"tiny-qwen-edit-r{RECIPE}")
    from backends.standins.tiny_flux2_klein import RECIPE, build_tiny_flux2_klein

    return build_tiny_flux2_klein(cache / f"tiny-flux2-klein-r{RECIPE}")


def instruct_standin_settings(kind: str, spec: dict[str, Any], cache: Path) -> dict[str, Any]:
    """`spec` (a policy's backend entry) pointed at the stand-in; routing-relevant fields (gpu_cost, ...) kept."""
    tier = {"steps": 2, "guidance_scale": 1.0, "use_lora": False}
    out = {k: v for k, v in spec.items() if k not in _DROP}
    out.update(
        model=str(instruct_standin_dir(kind, cache)),
        device="cpu",
        dtype="fp32",
        offload="none",
        fp8=False,
        compile=False,
        fuse_qkv=False,
        vae_tiling=False,
        target_megapixels=64 * 64 / 1024**2,
        feather_px=2,
        tiers={"low": dict(tier), "medium": dict(tier), "high": dict(tier)},
        seconds_per_step_mp=STANDIN_SECONDS[kind],
    )
    return out
