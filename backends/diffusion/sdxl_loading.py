"""How SDXL inpainting loads on the shared runtime: its diffusers pipeline (`SDXL_PIPELINE`), the LoRA for a fast
tier (TCD/LCM, with the scheduler it was distilled for) and the IP-Adapter for reference images, and the switch
of the shared pipeline's LoRA state per tier (`select_lora`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backends.diffusion import adapters
from backends.diffusion.runtime import LoadedPipeline, PipelineFamily, import_diffusers

if TYPE_CHECKING:
    from backends.diffusion.sdxl_settings import Settings


def _add_adapters(loaded: LoadedPipeline, settings: Settings) -> list[str]:
    notes = []
    if settings.ip_adapter is not None:
        _load_ip_adapter(loaded.pipe, settings)
        notes.append("ip-adapter")
    if settings.lora is not None:
        _load_lora(loaded, settings)
        notes.append("lora" + (" (fused)" if settings.lora.fuse else ""))
    return notes


SDXL_PIPELINE = PipelineFamily(
    name="SDXL inpaint",
    pipeline_class="StableDiffusionXLInpaintPipeline",
    example_model="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    add_adapters=_add_adapters,
)


def _load_lora(loaded: LoadedPipeline, settings: Settings) -> None:
    diffusers = import_diffusers()
    lora, pipe = settings.lora, loaded.pipe
    assert lora is not None
    adapters.load_lora(pipe, lora)
    if lora.scheduler == "tcd":
        loaded.lora_scheduler = diffusers.TCDScheduler.from_config(pipe.scheduler.config)
    elif lora.scheduler == "lcm":
        loaded.lora_scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    else:
        loaded.lora_scheduler = pipe.scheduler
    if lora.fuse:
        pipe.fuse_lora(lora_scale=lora.scale)
        pipe.scheduler = loaded.lora_scheduler
        loaded.lora_active = True
    else:
        pipe.disable_lora()


def _load_ip_adapter(pipe: Any, settings: Settings) -> None:
    ip = settings.ip_adapter
    assert ip is not None
    kwargs = {} if ip.image_encoder_folder is None else {"image_encoder_folder": ip.image_encoder_folder}
    try:
        pipe.load_ip_adapter(ip.model, subfolder=ip.subfolder, weight_name=ip.weight_name, **kwargs)
    except (OSError, ValueError) as exc:
        raise adapters.load_failure("IP-Adapter", ip.model, exc) from None
    pipe.set_ip_adapter_scale(ip.scale)


def select_lora(loaded: LoadedPipeline, settings: Settings, use_lora: bool) -> None:
    """Switch the shared pipeline to the tier's LoRA state. Call with the device lock held. A fused LoRA is in
    every call already (every tier uses it): nothing to switch."""
    lora = settings.lora
    adapters.select_lora(loaded, None if lora is None or lora.fuse else lora, use_lora)
