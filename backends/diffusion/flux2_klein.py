"""`kind: flux2-klein`: self-hosted FLUX.2 [klein] (diffusers `Flux2KleinPipeline`), instruction edits from a
prompt and 1..4 reference images.

Licences: FLUX.2-klein-4B and -klein-base-4B are Apache-2.0; the 9B checkpoints are under the FLUX non-commercial
licence (https://vercel.com/ai-gateway/models/flux-2-klein-4b, https://www.floyo.ai/models/flux-2-klein). 4B: a
3.9B transformer with a Qwen3-4B text encoder, ~15 GiB of bf16 weights (`memory_need()`).

The distilled checkpoints (FLUX.2-klein-4B / -9B) are the few-step models: 4 steps, guidance ignored, in every
tier (no LoRA needed). The base checkpoints (`-base-`) run classifier-free guidance:

    tier    distilled: steps/guidance   base: steps/guidance
    low     4 / 1.0                     20 / 4.0
    medium  4 / 1.0                     28 / 4.0
    high    4 / 1.0                     50 / 4.0   (the pipeline docstring's example)
Which one a checkpoint is comes from its model_index.json (`is_distilled`), else from the hub id (`-base-`), or
the `distilled:` setting. References over 1 MP are shrunk to 1 MP by the pipeline; each must be at least 64 px a
side (smaller ones are upscaled here) with an aspect ratio of at most 8:1 (refused before the GPU). BFL's own API
takes up to 4 references for klein, so 4 is the default limit.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image

from backends.base import EditRequest
from backends.diffusion.instruct import InstructEditBackend, _Job
from backends.diffusion.instruct_loading import add_lora
from backends.diffusion.instruct_settings import InstructSettings, Tier
from backends.diffusion.memory import Checkpoint
from backends.diffusion.runtime import PipelineFamily
from backends.errors import InvalidRequest
from backends.local_models import read_model_json

__all__ = ["DEFAULT_MODEL", "Flux2KleinBackend", "Settings"]

DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-4B"
MAX_REFERENCES = 4  # BFL API limit for klein (black-forest-labs/skills, skills/bfl-api/SKILL.md)
MIN_SIDE = 64  # the pipeline's image processor refuses smaller references
MAX_ASPECT = 8.0

DISTILLED_TIERS: dict[str, Tier] = {name: Tier(steps=4, guidance_scale=1.0) for name in ("low", "medium", "high")}
BASE_TIERS: dict[str, Tier] = {
    "low": Tier(steps=20, guidance_scale=4.0),
    "medium": Tier(steps=28, guidance_scale=4.0),
    "high": Tier(steps=50, guidance_scale=4.0),
}

KLEIN_4B = Checkpoint(
    name="FLUX.2 klein 4B",
    params_b={"transformer": 3.88, "text_encoder": 4.02, "vae": 0.084},
    denoiser="transformer",
    activations_gib=2.0,  # ~1 MP output + up to 4 references and 512 text tokens (estimate)
)
KLEIN_9B = Checkpoint(
    name="FLUX.2 klein 9B (non-commercial licence)",
    params_b={"transformer": 9.08, "text_encoder": 8.19, "vae": 0.084},
    denoiser="transformer",
    activations_gib=3.0,
)


def is_distilled(model: str, given: bool | None = None) -> bool:
    if given is not None:
        return given
    index = read_model_json(model) or {}
    if "is_distilled" in index:
        return bool(index["is_distilled"])
    return "-base-" not in model.lower()


KLEIN_PIPELINE = PipelineFamily(
    name="FLUX.2 klein",
    pipeline_class="Flux2KleinPipeline",
    example_model=DEFAULT_MODEL,
    denoiser="transformer",
    native_megapixels=lambda pipe: 1.0,
    add_adapters=add_lora,
    accelerator_dtype="bf16",
    regional_compile=True,
    fuse_qkv_on="denoiser",  # the double-stream blocks fuse; the single-stream ones are fused already
    first_block_cache=False,  # diffusers 0.42.1's hook raises TypeError (Tensor - list) on Flux2's blocks
)


class Settings(InstructSettings):
    family: ClassVar[PipelineFamily] = KLEIN_PIPELINE
    speed_family: ClassVar[str] = "flux2-klein"
    default_tiers: ClassVar[dict[str, Tier]] = DISTILLED_TIERS
    max_images_limit: ClassVar[int] = MAX_REFERENCES
    grid: ClassVar[int] = 16

    model: str = DEFAULT_MODEL
    distilled: bool | None = None  # None: from the checkpoint (model_index.json is_distilled, else the hub id)

    @classmethod
    def tier_defaults(cls, value: dict[str, Any]) -> dict[str, Tier]:
        model = str(value.get("model") or DEFAULT_MODEL)
        return DISTILLED_TIERS if is_distilled(model, value.get("distilled")) else BASE_TIERS

    @property
    def is_distilled(self) -> bool:
        return is_distilled(self.model, self.distilled)

    def checkpoint(self) -> Checkpoint:
        config = read_model_json(self.model, "transformer/config.json") or {}
        nine = config.get("joint_attention_dim") == 12288 or "9b" in self.model.lower()
        return KLEIN_9B if nine else KLEIN_4B


class Flux2KleinBackend(InstructEditBackend):
    Settings = Settings
    kind = "flux2-klein"

    def guided(self, tier: Tier) -> bool:
        return tier.guided and not self.settings.is_distilled

    def pipeline_kwargs(self, job: _Job, loaded: Any) -> dict[str, Any]:
        # distilled checkpoints ignore guidance (and warn at anything above 1.0)
        return {"guidance_scale": job.tier.guidance_scale if self.guided(job.tier) else 1.0}

    def condition_megapixels(self, size: tuple[int, int]) -> float:
        return min(1.0, size[0] * size[1] / (1024 * 1024))  # larger references are shrunk to 1 MP

    def prepare_inputs(self, images: list[Image.Image], request: EditRequest) -> list[Image.Image]:
        out = []
        for i, img in enumerate(images):
            w, h = img.size
            if max(w, h) > MAX_ASPECT * min(w, h):
                field = "image" if len(images) == 1 else f"image[{i}]"
                raise InvalidRequest(
                    f"{field}: {w}x{h} is wider than FLUX.2 klein takes (limit: aspect ratio <= 8:1)",
                    field=field,
                    value=f"{w}x{h}",
                    limit="aspect ratio <= 8:1",
                    job_id=request.job_id,
                )
            if min(w, h) < MIN_SIDE:  # the pipeline refuses references under 64 px a side: upscale them
                scale = MIN_SIDE / min(w, h)
                img = img.resize((max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))), Image.LANCZOS)
            out.append(img)
        return out
