"""Text-prompted masks: derive the edit region from the prompt, so self-hosted inpainting needs no mask.

    target = extract_target("remove the logo from the shelf")   # Target(phrase="logo", inverted=False)
    found = infer_mask(image, prompt, MaskSettings())            # InferredMask(mask_png, phrase, inverted, coverage)

1. `extract_target()` (target.py, pure): the phrase the prompt is about. "remove the logo from the shelf" -> "logo";
   "change the red badge to say SALE" -> "red badge"; "make the sky a sunset" -> "sky"; "place a lamp on the
   floor" -> "floor". A background phrase ("replace the background with...") is the inverse of the salient
   object: CLIPSeg is asked for `salient_phrase` and the region is inverted. No match: the prompt itself.
2. CLIPSeg (clipseg.py) scores every pixel for the phrase; the probabilities are thresholded, dilated by
   `dilate_px` and feathered by `feather_px`. With `grounded_sam:` configured, Grounding DINO boxes the phrase
   and SAM segments the boxes instead (grounded_sam.py); the rest is the same.
3. The mask follows OpenAI's convention: RGBA PNG at the image's size, alpha 0 = edit. The feather ramps alpha
   from 0 at the region's edge up to 255 over `feather_px` OUTSIDE it, so the alpha-0 region is exactly the
   (dilated) match. An empty match raises `BackendUnavailable` before any GPU time is spent on the edit, so the job
   takes the policy's fallbacks (an API that needs no mask).

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from backends.errors import BackendUnavailable
from backends.masks import clipseg, grounded_sam
from backends.masks.settings import MaskSettings
from backends.masks.target import extract_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferredMask:
    mask_png: bytes  # RGBA at the image's size, alpha 0 = edit (OpenAI's convention)
    phrase: str  # the target phrase ("logo", "background")
    inverted: bool  # the region is the inverse of `query`'s match
    coverage: float  # fraction of the image to be edited (alpha 0)
    query: str = ""  # what CLIPSeg was asked for
    matched: bool = True  # False: no verb pattern matched; the prompt itself was the query

    def details(self) -> dict[str, Any]:
        return {
            "mask_inferred": True,
            "mask_phrase": self.phrase,
            "mask_inverted": self.inverted,
            "mask_coverage": round(self.coverage, 4),
            "mask_query": self.query,
        }


def box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)^2 square around each pixel (zero padding), O(pixels) via integral images."""
    if r <= 0:
        return a.astype(np.float64)
    p = np.pad(a.astype(np.float64), r + 1)
    c = p.cumsum(0).cumsum(1)
    k = 2 * r + 1
    h, w = a.shape
    return c[k : k + h, k : k + w] - c[:h, k : k + w] - c[k : k + h, :w] + c[:h, :w]


def dilate(region: np.ndarray, r: int) -> np.ndarray:
    return region if r <= 0 else box_sum(region, r) > 0.5


def mask_from_region(region: np.ndarray, rgb: Image.Image | None = None, feather_px: int = 0) -> bytes:
    """RGBA PNG: alpha 0 on `region` (True = edit), ramping to 255 over `feather_px` outside it."""
    h, w = region.shape
    if feather_px > 0:
        near = box_sum(region, feather_px) / (2 * feather_px + 1) ** 2  # share of edit pixels nearby
        alpha = np.clip(255 * (1 - np.clip(near * 2, 0, 1)), 0, 255)
        alpha[region] = 0
        alpha[(~region) & (alpha < 1)] = 1  # only the region itself is alpha 0
    else:
        alpha = np.where(region, 0, 255)
    base = (rgb.convert("RGB") if rgb is not None else Image.new("RGB", (w, h), (0, 0, 0))).resize((w, h))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return buf.getvalue()


def probabilities(image: Image.Image, query: str, settings: MaskSettings) -> np.ndarray:
    """CLIPSeg's (or Grounding DINO + SAM's) per-pixel probability for `query` at the image's size (H x W, 0..1)."""
    if settings.grounded_sam is not None:
        return grounded_sam.probabilities(image, query, settings)
    return clipseg.probabilities(image, query, settings)


def infer_mask(image: Image.Image, prompt: str, settings: MaskSettings, *, job_id: str | None = None) -> InferredMask:
    """The edit region for `prompt` on `image` as an OpenAI-convention mask (see the module docstring)."""
    target = extract_target(prompt)
    query = settings.salient_phrase if target.inverted else target.phrase
    prob = probabilities(image, query, settings)
    match = prob >= settings.threshold
    region = ~match if target.inverted else match
    region = dilate(region, settings.dilate_px) if region.any() else region
    coverage = float(region.mean())
    if not region.any() or coverage < settings.min_coverage:
        what = f"everything except {query!r}" if target.inverted else repr(query)
        raise BackendUnavailable(  # this backend cannot run the job; an API that needs no mask still can
            f"mask=None: no region of the image matched the phrase {target.phrase!r} (looked for {what}; best "
            f"score {prob.max():.2f} vs threshold {settings.threshold}, coverage {coverage:.4f} < min_coverage "
            f"{settings.min_coverage}); give a mask, name the region plainly in the prompt, or lower "
            f"mask_inference.{'grounded_sam.box_threshold or ' if settings.grounded_sam else ''}threshold",
            job_id=job_id,
        )
    log.info(
        "inferred mask for %r: %s%r covers %.1f%%",
        prompt[:60],
        "not " if target.inverted else "",
        query,
        100 * coverage,
    )
    return InferredMask(
        mask_from_region(region, image, settings.feather_px),
        target.phrase,
        target.inverted,
        coverage,
        query,
        target.matched,
    )


__all__ = ["InferredMask", "box_sum", "dilate", "infer_mask", "mask_from_region", "probabilities"]
