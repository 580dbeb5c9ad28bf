"""Prompt adherence: CLIP image-text cosine similarity (transformers `CLIPModel`; torch imported lazily).

The model is configurable (default `openai/clip-vit-large-patch14`) and loaded once per process through the same
cached loader as the mask model; a missing model is a `BackendMisconfigured` that names the id and the cache.
"""

from __future__ import annotations

from PIL import Image

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


class ClipScorer:
    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str = "auto") -> None:
        self.model_id = model
        self.device = device

    def load(self) -> ClipScorer:
        """Load now (fail before anything is spent, not after)."""
        self._loaded()
        return self

    def _loaded(self):
        from backends.local_models import load_pretrained

        return load_pretrained(
            self.model_id, "CLIPModel", "CLIPProcessor", device=self.device, what="CLIP scoring model"
        )

    def cosine(self, image: Image.Image, text: str) -> float:
        """cos(image embedding, text embedding) in -1..1 (real CLIP: ~0.15 unrelated, ~0.35 a good match)."""
        import torch

        loaded = self._loaded()
        inputs = loaded.processor(
            text=[text], images=[image.convert("RGB")], padding=True, truncation=True, return_tensors="pt"
        )
        inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = loaded.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return float((img * txt).sum(-1)[0])
