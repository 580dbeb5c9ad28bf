"""Settings of the SDXL inpainting backend (pydantic; no torch), and its quality tiers.

Quality tiers, defaults (`steps` is diffusers' `num_inference_steps`; the pipeline runs int(steps x strength)):

    tier    steps  guidance  strength  runs   why
    low     12     8.0       0.99      11     fewer steps of the same model; with a TCD/LCM LoRA set
                                              `tiers: {low: {steps: 9, guidance_scale: 0, eta: 0.3, use_lora: true}}`
    medium  20     8.0       0.99      19     the checkpoint's model card (steps 15-30 "work well"; strength < 1)
    high    30     8.0       0.99      29     the top of the card's range; the reference job of the cost figures
    auto -> `auto_quality` (medium)

A policy overrides any of it with `tiers:` (per tier, only the fields it gives).

Estimates use seconds per guided UNet step per 1024x1024 image (VAE included) for the GPU the settings name
(`gpu:`, else `gpu_cost: {gpu: ...}`): from configs/gpu_speeds.yaml (published figures, e.g. 0.110 s on an
A100-80GB from huggingface/diffusion-fast; derived ones for cards without a published figure, labelled so), or
`seconds_per_step_mp` when set; measured seconds replace either once this process has run a warm job. The
estimate's basis names the figure, its card and its source.

`gpu_cost` defaults to the A100-80GB list rate in configs/prices.yaml.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from backends.diffusion.memory import Checkpoint, MemoryNeed, need
from backends.diffusion.runtime import PipelineFamily
from backends.diffusion.sdxl_loading import SDXL_PIPELINE
from backends.diffusion.settings import TIER_NAMES as TIER_NAMES  # re-exported
from backends.diffusion.settings import DiffusionSettings, Dtype, Offload, StrictModel, default_max_batch, merge_tiers
from backends.masks import MaskSettings
from backends.pricing import GpuCost

DEFAULT_MODEL = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
SDXL_INPAINT = Checkpoint(  # parameter counts of the checkpoint's configs (benchmarks/sdxl_arch.py)
    name="SDXL inpainting (2.6B UNet)",
    params_b={"unet": 2.567, "text_encoder": 0.123, "text_encoder_2": 0.695, "vae": 0.084},
    denoiser="unet",
    activations_gib=2.5,  # 1024^2, CFG batch 2, one image; VAE decode in fp16 (estimate)
)


class Tier(StrictModel):
    steps: int = Field(ge=1, le=200)  # num_inference_steps
    guidance_scale: float = Field(ge=0)  # > 1 turns classifier-free guidance on (UNet batch x2)
    strength: float = Field(default=0.99, gt=0, le=1)
    use_lora: bool = False  # run with the configured `lora` (and its scheduler)
    eta: float | None = Field(default=None, ge=0, le=1)  # TCD's gamma; ignored by schedulers without eta

    @property
    def steps_run(self) -> int:
        return int(self.steps * self.strength)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    @model_validator(mode="after")
    def _runs_a_step(self) -> Tier:
        if self.steps_run < 1:
            raise ValueError(f"steps x strength = {self.steps} x {self.strength} runs no step (need >= 1)")
        return self


TIERS: dict[str, Tier] = {
    "low": Tier(steps=12, guidance_scale=8.0),
    "medium": Tier(steps=20, guidance_scale=8.0),
    "high": Tier(steps=30, guidance_scale=8.0),
}


class LoraSettings(StrictModel):
    """A step-distillation LoRA for a fast tier: TCD (`h1t/TCD-SDXL-LoRA`) or LCM
    (`latent-consistency/lcm-lora-sdxl`)."""

    model: str  # hub id, local directory or .safetensors file
    weight_name: str | None = None
    scheduler: Literal["tcd", "lcm", "keep"] = "tcd"  # the scheduler the LoRA was distilled for
    scale: float = Field(default=1.0, gt=0)
    fuse: bool = False  # fuse into the UNet weights (faster; then every tier must use it)


class IPAdapterSettings(StrictModel):
    """Reference images (inputs after the first) through an IP-Adapter, e.g. h94/IP-Adapter, sdxl_models,
    ip-adapter_sdxl.bin."""

    model: str
    subfolder: str = "sdxl_models"
    weight_name: str = "ip-adapter_sdxl.bin"
    image_encoder_folder: str | None = "image_encoder"
    scale: float = Field(default=0.6, ge=0, le=2)


class Settings(DiffusionSettings):
    family: ClassVar[PipelineFamily] = SDXL_PIPELINE  # how the shared runtime loads it (sdxl_loading.py)

    model: str = DEFAULT_MODEL  # hub id or local directory (save_pretrained layout)
    variant: str | None = None  # e.g. "fp16": the hub's half-precision weight files
    device: str = "auto"  # auto (cuda > mps > cpu) | cuda | cuda:N | mps | cpu
    dtype: Dtype = "auto"  # auto: fp16 on cuda/mps, fp32 on cpu
    offload: Offload = "none"  # for cards under ~16 GB: "model" (12 GB ok), "sequential"
    compile: bool = False  # torch.compile the UNet (first call per shape compiles: minutes)
    compile_mode: str = "max-autotune-no-cudagraphs"
    channels_last: bool = False
    fuse_qkv: bool = False  # pipe.fuse_qkv_projections()
    lora: LoraSettings | None = None
    ip_adapter: IPAdapterSettings | None = None
    tiers: dict[str, Tier] = Field(default_factory=lambda: dict(TIERS))
    auto_quality: Literal["low", "medium", "high"] = "medium"
    negative_prompt: str | None = None
    maskless: Literal["refuse", "img2img"] = "refuse"  # a request without a mask: refuse it, or repaint it all
    mask_inference: MaskSettings | None = None  # mask-less requests get a mask from the prompt (before `maskless`)
    img2img_strength: float = Field(default=0.75, gt=0, le=1)  # mask-less repaints keep some of the input
    # Working area in units of 1024x1024. None: the model's native area (unet sample_size x VAE factor, squared:
    # 1.0 for SDXL, 64x64 for the tiny stand-in); estimates before the model is loaded assume 1.0.
    target_megapixels: float | None = Field(default=None, gt=0, le=4)
    feather_px: int = Field(default=8, ge=0, le=64)  # paste-back ramp inside the mask, at output size
    max_n: int = Field(default=10, ge=1, le=10)
    # Jobs an executor groups into one pipeline call (`edit_batch`). Default by device: 4 on CUDA (fuller batches
    # run faster per image), 1 on cpu/mps (no faster batched); `auto` counts as CUDA where an NVIDIA driver is.
    max_batch: int = Field(default=None, ge=1, le=64, validate_default=False)  # type: ignore[assignment]
    gpu_cost: GpuCost = Field(default_factory=lambda: GpuCost(gpu="A100-80GB"))
    gpu: str | None = None  # the card it runs on, for the speed estimate (default: gpu_cost's card)
    seconds_per_step_mp: float | None = Field(default=None, gt=0)  # overrides the speed table (configs/gpu_speeds)

    @model_validator(mode="before")
    @classmethod
    def _default_max_batch(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("max_batch") is None:
            value = {**value, "max_batch": default_max_batch(str(value.get("device", "auto")))}
        return value

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_tiers(cls, value: Any) -> Any:
        """A policy gives only the tiers and fields it changes; the rest keep their defaults."""
        if not isinstance(value, dict):
            return value
        return merge_tiers(TIERS, value)

    @model_validator(mode="after")
    def _fused_lora_everywhere(self) -> Settings:
        if self.lora is not None and self.lora.fuse and not all(t.use_lora for t in self.tiers.values()):
            raise ValueError("lora.fuse bakes the LoRA into every call: set use_lora on every tier, or fuse: false")
        return self

    def checkpoint(self) -> Checkpoint:
        return SDXL_INPAINT

    def memory_need(self) -> MemoryNeed:
        return need(SDXL_INPAINT, dtype="fp16" if self.dtype == "auto" else self.dtype, offload=self.offload)

    def cache_key(self) -> tuple:
        """What makes two loaded pipelines different: backends with equal keys share one."""
        return (
            self.model,
            self.variant,
            self.device,
            self.dtype,
            self.offload,
            self.compile,
            self.compile_mode,
            self.channels_last,
            self.fuse_qkv,
            self.lora,
            self.ip_adapter,
        )
