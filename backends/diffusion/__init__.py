"""Self-hosted diffusion models. Owns what every model family shares: runtime.py (the process-wide pipeline cache,
loading from a hub id or a local `save_pretrained` directory, memory and speed options, timing, out-of-memory
handling, seeds), calls.py (one pipeline call: device lock, clock, foreign errors, the done line), adapters.py
(loading LoRAs and switching them per tier), settings.py (settings pieces and checks), speeds.py (which per-GPU
speed an estimate uses), memory.py (the GPU memory a checkpoint needs), inputs.py (decoding inputs, the empty-mask
refusal, the paste-back ramp); and one module set per family: SDXL inpainting (sdxl.py the backend,
sdxl_settings.py its settings and tiers, sdxl_planning.py its estimates and shared calls, sdxl_masks.py which
pixels it repaints, sdxl_loading.py its pipeline class, LoRA and IP-Adapter) and the instruction editors, which
share instruct.py (the backend), instruct_settings.py and instruct_loading.py (few-step LoRAs): Qwen-Image-Edit
(qwen_edit.py) and FLUX.2 klein (flux2_klein.py).

Adding a family is a module or two here (its settings name a `runtime.PipelineFamily`), one registry line and its
exports below. torch and diffusers load inside functions only: building a backend, reading its capabilities and
estimating never import them. Uses `backends.masks` for mask-less edits; masks never import this package."""

from backends.diffusion.flux2_klein import Flux2KleinBackend
from backends.diffusion.qwen_edit import QwenEditBackend
from backends.diffusion.sdxl import SDXLInpaintBackend
from backends.diffusion.sdxl_settings import DEFAULT_MODEL as SDXL_DEFAULT_MODEL
from backends.diffusion.sdxl_settings import TIERS as SDXL_TIERS
from backends.diffusion.sdxl_settings import Settings as SDXLSettings

__all__ = [
    "Flux2KleinBackend",
    "QwenEditBackend",
    "SDXL_DEFAULT_MODEL",
    "SDXL_TIERS",
    "SDXLInpaintBackend",
    "SDXLSettings",
]
