"""Mask inference: the region an edit prompt is about, as an OpenAI-convention mask (alpha 0 = edit), so a
self-hosted inpainting backend needs no mask from the caller. CLIPSeg by default, Grounding DINO + SAM when
configured (clipseg.py, grounded_sam.py); the prompt's target phrase (target.py); thresholding, dilation and
feathering into the mask (infer.py); the `mask_inference:` section of a self-hosted backend (settings.py).

torch and transformers load inside functions only. Masks never import the diffusion family (it uses them)."""

from backends.masks.infer import InferredMask, box_sum, dilate, infer_mask, mask_from_region, probabilities
from backends.masks.settings import DEFAULT_MASK_MODEL, GroundedSamSettings, MaskSettings
from backends.masks.target import Target, extract_target

__all__ = [
    "DEFAULT_MASK_MODEL",
    "GroundedSamSettings",
    "InferredMask",
    "MaskSettings",
    "Target",
    "box_sum",
    "dilate",
    "extract_target",
    "infer_mask",
    "mask_from_region",
    "probabilities",
]
