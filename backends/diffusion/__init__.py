"""Self-hosted diffusion models. Owns the runtime every model family shares (runtime.py: device and dtype,
the process-wide pipeline cache, loading from a hub id or a local `save_pretrained` directory, timing,
out-of-memory handling, seeds; canvas.py: sizes, letterboxing, paste-back and encoding, pure Pillow + numpy)
and one module per family: SDXL inpainting today (sdxl.py, sdxl_settings.py).

Adding a family is a module here plus one registry line. torch and diffusers load inside functions only:
building a backend, reading its capabilities and estimating never import them. Uses `backends.masks` for
mask-less edits; masks never import this package."""

from backends.diffusion.sdxl import SDXLInpaintBackend
from backends.diffusion.sdxl_settings import DEFAULT_MODEL as SDXL_DEFAULT_MODEL
from backends.diffusion.sdxl_settings import TIERS as SDXL_TIERS
from backends.diffusion.sdxl_settings import Settings as SDXLSettings

__all__ = ["SDXL_DEFAULT_MODEL", "SDXL_TIERS", "SDXLInpaintBackend", "SDXLSettings"]
