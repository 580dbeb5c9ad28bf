"""`kind: qwen-edit`: self-hosted Qwen-Image-Edit (diffusers `QwenImageEditPlusPipeline` for Qwen-Image-Edit-2509
and -2511, which take several input images; `QwenImageEditPipeline` for the single-image Qwen-Image-Edit).

Apache-2.0 weights (https://build.nvidia.com/qwen/qwen-image-edit.md links the three model cards). A 20B MMDiT
transformer with a Qwen2.5-VL-7B text encoder: ~54 GiB of bf16 weights (`memory_need()`; fp8 and offload lower it).
The pipeline class comes from the checkpoint's model_index.json (a local directory or the Hugging Face cache), or,
when neither has it, from the hub id: the Plus pipeline on a single-image checkpoint would run a prompt template
that model was not trained on.

Tiers (defaults; a policy overrides any field):

    tier    steps  true_cfg_scale   why
    low     20     4.0              half the model card's steps
    medium  30     4.0
    high    40     4.0              the model card's example: 40 steps, true_cfg_scale 4.0, negative prompt " "
With a Lightning LoRA (`lora: {model: lightx2v/Qwen-Image-Edit-2511-Lightning, weight_name:
Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors}`) a fast tier is e.g.
`tiers: {low: {steps: 4, guidance_scale: 1.0, use_lora: true}}` (ModelTC/Qwen-Image-Lightning: 4/8 steps, no CFG).

Every input image is VAE-encoded at ~1 MP whatever the output size, so each one costs the transformer about as
much as the output itself; the model was trained with 1 to 3 input images (Plus), so at most 3 are taken.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import model_validator

from backends.diffusion.instruct import InstructEditBackend, _Job
from backends.diffusion.instruct_loading import add_lora
from backends.diffusion.instruct_settings import InstructSettings, Tier
from backends.diffusion.memory import Checkpoint
from backends.diffusion.runtime import PipelineFamily
from backends.errors import BackendMisconfigured
from backends.local_models import read_model_json

__all__ = ["DEFAULT_MODEL", "QwenEditBackend", "Settings", "TIERS"]

DEFAULT_MODEL = "Qwen/Qwen-Image-Edit-2511"
PLUS, SINGLE = "QwenImageEditPlusPipeline", "QwenImageEditPipeline"
TRAINED_MAX_IMAGES = 3  # Qwen-Image-Edit-2509/2511 were trained and are served with 1-3 input images

TIERS: dict[str, Tier] = {
    "low": Tier(steps=20, guidance_scale=4.0),
    "medium": Tier(steps=30, guidance_scale=4.0),
    "high": Tier(steps=40, guidance_scale=4.0),
}

# Parameter counts of the full-size architecture (meta device, diffusers 0.42.1 / transformers 5.25).
QWEN_IMAGE_EDIT = Checkpoint(
    name="Qwen-Image-Edit (20B)",
    params_b={"transformer": 20.43, "text_encoder": 8.29, "vae": 0.127},
    denoiser="transformer",
    activations_gib=4.0,  # ~1 MP output + up to 3 inputs: ~16k image tokens through 60 blocks (estimate)
)


def pipeline_class(model: str) -> str:
    """Plus or single-image: the checkpoint's model_index.json when it is local or cached, else the hub id."""
    index = read_model_json(model) or {}
    name = index.get("_class_name")
    if name in (PLUS, SINGLE):
        return name
    if name is not None:
        raise BackendMisconfigured(
            f"model {model!r} is a {name}, not a Qwen-Image-Edit checkpoint ({PLUS} or {SINGLE})"
        )
    return SINGLE if model.rstrip("/").endswith("Qwen/Qwen-Image-Edit") else PLUS


def _choose_class(settings: Settings) -> str:
    return pipeline_class(settings.model)


QWEN_PIPELINE = PipelineFamily(
    name="Qwen-Image-Edit",
    pipeline_class=PLUS,
    example_model=DEFAULT_MODEL,
    denoiser="transformer",
    native_megapixels=lambda pipe: 1.0,
    add_adapters=add_lora,
    choose_class=_choose_class,
    accelerator_dtype="bf16",
    regional_compile=True,
    fuse_qkv_on="none",  # its attention processor reads the separate q/k/v projections
)


class Settings(InstructSettings):
    family: ClassVar[PipelineFamily] = QWEN_PIPELINE
    speed_family: ClassVar[str] = "qwen-edit"
    default_tiers: ClassVar[dict[str, Tier]] = TIERS
    max_images_limit: ClassVar[int] = TRAINED_MAX_IMAGES
    grid: ClassVar[int] = 32  # the pipeline sizes its ~1 MP condition images in multiples of 32: match them

    model: str = DEFAULT_MODEL
    negative_prompt: str = " "  # true CFG runs only with a negative prompt (even " "), when guidance_scale > 1

    @model_validator(mode="after")
    def _two_steps(self) -> Settings:
        short = [name for name, tier in self.tiers.items() if tier.steps < 2]
        if short:  # its scheduler's terminal stretch divides by zero at one step: a black image
            raise ValueError(f"tiers {short}: Qwen-Image-Edit needs steps >= 2 (one step gives a black image)")
        return self

    def images_limit(self) -> int:
        return 1 if pipeline_class(self.model) == SINGLE else TRAINED_MAX_IMAGES

    def checkpoint(self) -> Checkpoint:
        return QWEN_IMAGE_EDIT


class QwenEditBackend(InstructEditBackend):
    Settings = Settings
    kind = "qwen-edit"

    def pipeline_kwargs(self, job: _Job, loaded: Any) -> dict[str, Any]:
        guided = job.tier.guided
        kwargs: dict[str, Any] = {
            "true_cfg_scale": job.tier.guidance_scale,
            "negative_prompt": self.settings.negative_prompt if guided else None,
        }
        if type(loaded.pipe).__name__ == SINGLE:
            kwargs["image"] = job.images[0]  # one image, not a list
        return kwargs

    def condition_megapixels(self, size: tuple[int, int]) -> float:
        return 1.0  # every input is resized to ~1 MP for the VAE, whatever its size
