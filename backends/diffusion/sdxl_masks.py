"""Which pixels an SDXL inpainting job repaints (`choose_mask`): the request's mask, one inferred from the prompt,
or the whole image, else a refusal that says what to do. OpenAI's mask (alpha 0 = edit) becomes diffusers' (white
= repaint) here. No model runs except mask inference, when configured.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from backends import canvas as px
from backends.base import EditRequest
from backends.diffusion.inputs import given_mask
from backends.diffusion.sdxl_settings import Settings
from backends.errors import InvalidRequest
from backends.masks import InferredMask, infer_mask


@dataclass(frozen=True)
class MaskChoice:
    mask: Image.Image  # repaint mask (L, white = repaint) at the input image's size
    source: str  # "given" | "inferred" | "img2img"
    inferred: InferredMask | None = None  # the derived mask, kept beside the outputs as mask.png


def choose_mask(request: EditRequest, settings: Settings, image: Image.Image) -> MaskChoice:
    """Which pixels to repaint: the request's mask; else one inferred from the prompt (`mask_inference`);
    else the whole image (`maskless: img2img`); else refuse. A given mask with nothing to edit is refused; an
    all-transparent one is a whole-image edit, run as `maskless: img2img` runs a mask-less job (refused without
    it: at the tiers' strength the inpainting model would repaint the picture from noise)."""
    if request.mask is not None:
        repaint, area = given_mask(request, image.size)
        if area < 1.0:
            return MaskChoice(repaint, "given")
        if settings.maskless == "img2img":
            return MaskChoice(repaint, "img2img")
        raise InvalidRequest(
            "mask: every pixel is transparent (a whole-image edit); SDXL inpainting would repaint the picture from "
            "noise. Set `maskless: img2img` to edit the whole image keeping its structure, or send the job to an "
            "instruction editor (kind: qwen-edit or flux2-klein) (limit: some opaque pixels on this backend)",
            field="mask",
            value=request.mask.name,
            limit="some opaque pixels on this backend",
            job_id=request.job_id,
        )
    if settings.mask_inference is not None:
        ms = settings.mask_inference
        if ms.device == "auto":  # run next to the pipeline
            ms = ms.model_copy(update={"device": settings.device})
        found = infer_mask(image, request.prompt, ms, job_id=request.job_id)
        return MaskChoice(px.repaint_mask(Image.open(io.BytesIO(found.mask_png)), image.size), "inferred", found)
    if settings.maskless == "img2img":
        return MaskChoice(px.repaint_mask(None, image.size), "img2img")
    raise maskless_refusal(request)


def maskless_refusal(request: EditRequest) -> InvalidRequest:
    return InvalidRequest(
        "mask=None: this SDXL inpainting backend needs a mask (alpha 0 marks the area to edit); "
        "send mask-less jobs to a backend that edits without one, or set `maskless: img2img` "
        "to repaint the whole image (limit: a mask is required here)",
        field="mask",
        value=None,
        limit="a mask is required on this backend",
        job_id=request.job_id,
    )
