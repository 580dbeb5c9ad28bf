"""Mask inference: the region an edit prompt is about, as an OpenAI-convention mask (alpha 0 = edit), so a
self-hosted inpainting backend needs no mask from the caller. CLIPSeg by default, Grounding DINO + SAM when
configured; the settings are the `mask_inference:` section of a self-hosted backend.

torch and transformers load inside functions only. Masks never import the diffusion family (it uses them)."""

from backends.masks.infer import (
    DEFAULT_MASK_MODEL,
    GroundedSamSettings,
    InferredMask,
    MaskSettings,
    Target,
    box_sum,
    dilate,
    extract_target,
    infer_mask,
    load_pretrained,
    mask_from_region,
    probabilities,
)

__all__ = [
    "DEFAULT_MASK_MODEL", "GroundedSamSettings", "InferredMask", "MaskSettings", "Target", "box_sum", "dilate",
    "extract_target", "infer_mask", "load_pretrained", "mask_from_region", "probabilities",
]
