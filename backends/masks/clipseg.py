"""CLIPSeg masks (the default): `CLIPSegForImageSegmentation` (default `CIDAS/clipseg-rd64-refined`, loaded once
per process) scores every pixel for the phrase; the low-res logits are resized to the image and passed through a
sigmoid. torch and transformers are imported inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from backends.local_models import load_pretrained

if TYPE_CHECKING:
    from backends.masks.settings import MaskSettings


def probabilities(image: Image.Image, query: str, settings: MaskSettings) -> np.ndarray:
    """CLIPSeg's per-pixel probability for `query` at the image's size (H x W, float 0..1)."""
    import torch

    loaded = load_pretrained(
        settings.model, "CLIPSegForImageSegmentation", "CLIPSegProcessor", device=settings.device, what="mask model"
    )
    inputs = loaded.processor(
        text=[query], images=[image.convert("RGB")], padding=True, truncation=True, return_tensors="pt"
    )
    inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    low = logits.reshape(-1, *logits.shape[-2:])[0].float().cpu().numpy()
    up = Image.fromarray(low.astype(np.float32), "F").resize(image.size, Image.Resampling.BILINEAR)
    return 1.0 / (1.0 + np.exp(-np.asarray(up, dtype=np.float64)))
