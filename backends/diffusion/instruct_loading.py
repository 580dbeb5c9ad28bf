"""Few-step LoRAs for the instruction-editing families on the shared runtime: loaded once (disabled), switched on
per tier (`adapters.select_lora`) together with the scheduler settings they were distilled with.

Qwen-Image-Lightning (lightx2v, https://github.com/ModelTC/Qwen-Image-Lightning) was distilled with shift 3: its
`generate_with_diffusers.py` swaps the flow-matching scheduler to `base_shift = max_shift = log(3)` with no
`shift_terminal` (exponential dynamic shifting), and runs 4 or 8 steps with `true_cfg_scale=1.0`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from backends.diffusion.adapters import load_lora
from backends.diffusion.runtime import LoadedPipeline, import_diffusers

if TYPE_CHECKING:
    from backends.diffusion.instruct_settings import InstructSettings

LIGHTNING_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "shift": 1.0,
    "shift_terminal": None,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


def add_lora(loaded: LoadedPipeline, settings: InstructSettings) -> list[str]:
    """Load the configured LoRA as adapter "fast", disabled; its scheduler is kept for the tiers that use it."""
    lora = settings.lora
    if lora is None:
        return []
    diffusers, pipe = import_diffusers(), loaded.pipe
    load_lora(pipe, lora)
    if lora.scheduler == "lightning":
        config = {**pipe.scheduler.config, **LIGHTNING_SCHEDULER}
        loaded.lora_scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
    else:
        loaded.lora_scheduler = pipe.scheduler
    pipe.disable_lora()
    return [f"lora {lora.model}"]
