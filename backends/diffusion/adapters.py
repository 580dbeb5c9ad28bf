"""Adapters on a shared pipeline, for every family: loading a few-step LoRA as the disabled adapter "fast", the
one error a load failure gives, and switching the pipeline to a tier's LoRA state per call.

Families keep what differs: which scheduler a LoRA was distilled with (`sdxl_loading`, `instruct_loading`), SDXL's
fused LoRA and its IP-Adapter.
"""

from __future__ import annotations

from typing import Any, Protocol

from backends.diffusion.runtime import LoadedPipeline
from backends.errors import BackendMisconfigured
from backends.local_models import hf_cache_dir

FAST = "fast"  # the adapter name a family's few-step LoRA is loaded under


class Lora(Protocol):
    model: str
    weight_name: str | None
    scale: float


def load_failure(what: str, model: str, exc: Exception) -> BackendMisconfigured:
    """A LoRA or IP-Adapter that would not load: its first error line and where the hub cache is."""
    return BackendMisconfigured(
        f"cannot load {what} {model!r}: {str(exc).splitlines()[0]} (HF cache: {hf_cache_dir()})"
    )


def load_lora(pipe: Any, lora: Lora) -> None:
    """Load `lora` into the pipeline as adapter "fast" (enabled; the caller disables or fuses it)."""
    try:
        pipe.load_lora_weights(lora.model, weight_name=lora.weight_name, adapter_name=FAST)
    except (OSError, ValueError) as exc:
        raise load_failure("LoRA", lora.model, exc) from None


def select_lora(loaded: LoadedPipeline, lora: Lora | None, use_lora: bool) -> None:
    """Switch the shared pipeline to the tier's LoRA state (`lora`: the switchable one, None if there is none).
    Call with the device lock held."""
    if lora is None or loaded.lora_active == use_lora:
        return
    pipe = loaded.pipe
    if use_lora:
        pipe.enable_lora()
        pipe.set_adapters([FAST], adapter_weights=[lora.scale])
        pipe.scheduler = loaded.lora_scheduler
    else:
        pipe.disable_lora()
        pipe.scheduler = loaded.base_scheduler
    loaded.lora_active = use_lora
