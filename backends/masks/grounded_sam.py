"""Grounding DINO + SAM masks: `mask_inference: {grounded_sam: {...}}` instead of CLIPSeg.

    probabilities(image, "logo", settings)  # H x W, 0..1: SAM's mask probability inside the detected logo(s)

1. Grounding DINO (`GroundingDinoForObjectDetection` + `GroundingDinoProcessor`, default
   `IDEA-Research/grounding-dino-tiny`) finds boxes for the query phrase; those scoring at least `box_threshold`
   are kept, best first, at most `max_boxes`.
2. SAM (`SamModel` + `SamProcessor`, default `facebook/sam-vit-base`) segments every kept box in one call; the
   low-res mask logits are brought back to the image by the processor's `post_process_masks`, passed through a
   sigmoid, and the per-pixel maximum over boxes is the probability map.
3. `infer_mask` (infer.py) does the rest exactly as for CLIPSeg (target phrase and inversion, threshold,
   dilate, feather, min_coverage, `BackendUnavailable` when nothing matched). No box means an all-zero map.

Both models load once per process through `backends.local_models.load_pretrained` (hub id or local
save_pretrained directory). The processors are the library's; without torchvision transformers picks their PIL
variants (`GroundingDinoImageProcessorPil`, `SamImageProcessorPil`). torch and transformers are imported inside
functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from backends.local_models import load_pretrained

if TYPE_CHECKING:
    from backends.masks.settings import MaskSettings

log = logging.getLogger(__name__)


def detector_text(query: str) -> str:
    """Grounding DINO wants lower-case phrases each ending with a period ("logo.")."""
    return query.lower().strip().rstrip(".").strip() + "."


def detect(image: Image.Image, query: str, settings: MaskSettings) -> tuple[list[list[float]], list[float]]:
    """Boxes (x0, y0, x1, y1 in image pixels) for `query` scoring >= box_threshold, best first, and their scores."""
    import torch

    gs = settings.grounded_sam
    assert gs is not None
    det = load_pretrained(
        gs.detector,
        "GroundingDinoForObjectDetection",
        "GroundingDinoProcessor",
        device=settings.device,
        what="detector model",
    )
    inputs = det.processor(images=image, text=detector_text(query), return_tensors="pt").to(det.device)
    with torch.inference_mode():
        outputs = det.model(**inputs)
    found = det.processor.post_process_grounded_object_detection(
        outputs,
        inputs["input_ids"],
        threshold=gs.box_threshold,
        text_threshold=0.0,
        target_sizes=[(image.height, image.width)],
    )[0]
    scores = found["scores"].float().cpu()
    order = scores.argsort(descending=True)[: gs.max_boxes]
    boxes = found["boxes"].float().cpu()[order]
    # clamp to the picture: a box poking past the edge is still a prompt for the part inside it
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    return boxes.tolist(), scores[order].tolist()


def segment(image: Image.Image, boxes: list[list[float]], settings: MaskSettings) -> np.ndarray:
    """SAM's per-pixel probability inside any of `boxes`, at the image's size (H x W, float 0..1)."""
    import torch

    gs = settings.grounded_sam
    assert gs is not None
    sam = load_pretrained(gs.segmenter, "SamModel", "SamProcessor", device=settings.device, what="segmentation model")
    inputs = sam.processor(images=image, input_boxes=[boxes], return_tensors="pt").to(sam.device)
    with torch.inference_mode():
        out = sam.model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
    logits = sam.processor.image_processor.post_process_masks(
        out.pred_masks.float().cpu(),
        inputs["original_sizes"].cpu(),
        inputs["reshaped_input_sizes"].cpu(),
        binarize=False,
    )[0]  # boxes x 1 x H x W
    return torch.sigmoid(logits.amax(dim=(0, 1))).double().numpy()


def probabilities(image: Image.Image, query: str, settings: MaskSettings) -> np.ndarray:
    """Per-pixel probability that the image shows `query` (H x W, float 0..1); zeros where nothing was detected."""
    rgb = image.convert("RGB")
    boxes, scores = detect(rgb, query, settings)
    if not boxes:
        log.info(
            "grounding dino found no box for %r at box_threshold %s",
            query,
            settings.grounded_sam.box_threshold if settings.grounded_sam else None,
        )
        return np.zeros((rgb.height, rgb.width), dtype=np.float64)
    log.info("grounding dino: %d box(es) for %r, best score %.2f", len(boxes), query, scores[0])
    return segment(rgb, boxes, settings)


__all__ = ["detect", "detector_text", "probabilities", "segment"]
