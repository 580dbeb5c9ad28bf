"""Settings shared by the instruction-editing families (Qwen-Image-Edit, FLUX.2 klein): pydantic only, no torch.

Same style as `kind: sdxl`: `model:` a hub id or a local `save_pretrained` directory, `device`, `dtype`,
`gpu_cost`, quality tiers as steps and guidance (a policy overrides only the fields it gives), a few-step LoRA
for fast tiers where one is published, and memory options:

    dtype: auto        bf16 on cuda/mps (these transformers overflow fp16), fp32 on cpu
    offload: model     one component on the GPU at a time (the transformer sets the peak)
    fp8: true          the transformer's weights stored in float8 (half of bf16), upcast per layer; no extra library
    vae_tiling: true   decode large outputs in tiles
Speed options (benchmarks/diffusion_speed.py measures them): `compile` (torch.compile of the transformer's
repeated blocks), `fuse_qkv` (FLUX.2 only), `attention_backend` (diffusers' names: flash, _flash_3_hub, sage,
_native_cudnn, ...), `first_block_cache` (a threshold such as 0.08: steps whose first block barely changes reuse the
rest; trades quality for speed). The GiB each needs: `memory_need()` and docs/self-hosted-diffusion.md.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from backends.diffusion.memory import Checkpoint, MemoryNeed, need
from backends.diffusion.runtime import PipelineFamily
from backends.diffusion.settings import TIER_NAMES as TIER_NAMES  # re-exported
from backends.diffusion.settings import DiffusionSettings, Dtype, Offload, StrictModel, merge_tiers
from backends.pricing import GpuCost


class Tier(StrictModel):
    steps: int = Field(ge=1, le=200)  # num_inference_steps
    guidance_scale: float = Field(ge=0)  # > 1 turns classifier-free guidance on (two transformer passes per step)
    use_lora: bool = False  # run with the configured few-step `lora` (and its scheduler)

    @property
    def steps_run(self) -> int:
        return self.steps

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0


class LoraSettings(StrictModel):
    """A few-step LoRA for fast tiers, e.g. lightx2v/Qwen-Image-Edit-2511-Lightning."""

    model: str  # hub id, local directory or .safetensors file
    weight_name: str | None = None
    scheduler: Literal["lightning", "keep"] = "lightning"  # the scheduler settings the LoRA was distilled with
    scale: float = Field(default=1.0, gt=0)


class InstructSettings(DiffusionSettings):
    """The fields every instruction-editing family has; a family subclasses it with its defaults."""

    family: ClassVar[PipelineFamily]
    speed_family: ClassVar[str]  # its key in configs/gpu_speeds.yaml
    default_tiers: ClassVar[dict[str, Tier]]
    max_images_limit: ClassVar[int]  # the most input images the family takes (the setting may lower it)
    grid: ClassVar[int]  # working sizes are multiples of this (the VAE's 8x times the transformer's 2x2 patches)

    model: str
    variant: str | None = None  # e.g. "fp16"-style weight files on the hub
    device: str = "auto"  # auto (cuda > mps > cpu) | cuda | cuda:N | mps | cpu
    dtype: Dtype = "auto"
    offload: Offload = "none"
    fp8: bool = False
    vae_tiling: bool = False
    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"
    fuse_qkv: bool = False
    attention_backend: str | None = None
    first_block_cache: float | None = Field(default=None, gt=0, lt=1)
    channels_last: bool = False  # a UNet option; kept for the shared runtime, ignored by transformers
    lora: LoraSettings | None = None
    tiers: dict[str, Tier] = Field(default_factory=dict)
    auto_quality: Literal["low", "medium", "high"] = "medium"
    # Working area in units of 1024x1024 (the models were trained at ~1 MP). None: 1.0.
    target_megapixels: float | None = Field(default=None, gt=0, le=4)
    feather_px: int = Field(default=8, ge=0, le=64)  # paste-back ramp inside a given mask, at output size
    max_n: int = Field(default=10, ge=1, le=10)
    max_images: int | None = Field(default=None, ge=1, le=16)  # default: the family's (or checkpoint's) limit
    gpu_cost: GpuCost = Field(default_factory=lambda: GpuCost(gpu="A100-80GB"))
    gpu: str | None = None  # the card it runs on, for the speed estimate (default: gpu_cost's card)
    seconds_per_step_mp: float | None = Field(default=None, gt=0)  # overrides the speed table (configs/gpu_speeds)

    @model_validator(mode="before")
    @classmethod
    def _merge_tiers(cls, value: Any) -> Any:
        """A policy gives only the tiers and fields it changes; the rest keep the family's defaults."""
        if not isinstance(value, dict):
            return value
        given = value.get("tiers") or {}
        if not isinstance(given, dict):
            return value
        try:
            merged = merge_tiers(cls.tier_defaults(value), given)
        except ValueError as exc:
            raise ValueError(f"tiers: {exc}") from None  # a model validator's error names no field
        return {**value, "tiers": merged}

    @classmethod
    def tier_defaults(cls, value: dict[str, Any]) -> dict[str, Tier]:
        """The family's tiers for these raw settings (klein: by distilled or base checkpoint)."""
        return cls.default_tiers

    @model_validator(mode="after")
    def _consistent(self) -> InstructSettings:
        if self.fuse_qkv and self.family.fuse_qkv_on == "none":
            raise ValueError(f"fuse_qkv: {self.family.name}'s attention has no fused QKV path in diffusers")
        if self.first_block_cache and not self.family.first_block_cache:
            raise ValueError(f"first_block_cache: diffusers' cache hook fails on {self.family.name}'s blocks")
        limit = self.images_limit()
        if self.max_images is not None and self.max_images > limit:
            raise ValueError(f"max_images: {self.max_images} is more than this checkpoint takes ({limit})")
        return self

    def images_limit(self) -> int:
        """The most input images this checkpoint takes (Qwen's single-image Edit: 1)."""
        return self.max_images_limit

    def checkpoint(self) -> Checkpoint:
        raise NotImplementedError

    def memory_need(self) -> MemoryNeed:
        dtype = "bf16" if self.dtype == "auto" else self.dtype
        return need(self.checkpoint(), dtype=dtype, offload=self.offload, fp8=self.fp8)

    def cache_key(self) -> tuple:
        """What makes two loaded pipelines different: backends with equal keys share one."""
        return (
            self.model,
            self.variant,
            self.device,
            self.dtype,
            self.offload,
            self.fp8,
            self.vae_tiling,
            self.compile,
            self.compile_mode,
            self.fuse_qkv,
            self.attention_backend,
            self.first_block_cache,
            self.lora,
        )
