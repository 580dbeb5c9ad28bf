"""A tiny RANDOM-WEIGHT Qwen-Image-Edit pipeline, for tests, demos and CPU smoke runs. Its outputs are noise.

It has the production layout and classes of the checkpoints the `qwen-edit` backend loads, in three variants:

    2511    QwenImageEditPlusPipeline, transformer with `zero_cond_t` (Qwen/Qwen-Image-Edit-2511; the default)
    2509    QwenImageEditPlusPipeline (Qwen/Qwen-Image-Edit-2509)
    edit    QwenImageEditPipeline, one input image (Qwen/Qwen-Image-Edit)

Components: a Qwen2.5-VL text encoder with its `Qwen2VLProcessor` (needs torchvision), a local byte-level Qwen2
tokenizer (see `tiny_qwen_parts`), a `QwenImageTransformer2DModel` and a `AutoencoderKLQwenImage` with the real 8x
spatial compression and 16-pixel size grid, and the checkpoints' flow-matching scheduler settings. It is written with
`save_pretrained` and loads with `<Pipeline>.from_pretrained(DIR)` exactly as production loads a hub id, offline.

Speed: both pipelines resize every input image to ~1 MP before the VAE encodes it, whatever the output size, and no
call argument turns that off. The VAE is therefore as thin as the architecture allows (1 channel per level, no
residual blocks in the encoder); its single mid-block attention over 128x128 latents is most of the ~0.3-0.6 s each
input image costs on 2 CPU cores. Weights are sharpened (`tiny_qwen_parts.sharpen`) so that outputs react to the
prompt and to every input image.

    python -m backends.standins.tiny_qwen_edit DIR [--variant 2511|2509|edit] [--overwrite]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.standins.tiny_qwen_parts import VariantStandin, qwen_tokenizer, sharpen, special_ids, token_roles

__all__ = [
    "RECIPE",
    "VARIANTS",
    "assemble",
    "build_tiny_qwen_edit",
    "edit_tokenizer",
    "pipeline_class_of",
    "template_prefix",
    "text_encoder_config",
    "tiny_qwen_edit_pipeline",
]

# Bump when the recipe changes, so existing builds (stamped with it) are rebuilt.
RECIPE = 1
VARIANTS = {"2511": "QwenImageEditPlusPipeline", "2509": "QwenImageEditPlusPipeline", "edit": "QwenImageEditPipeline"}

TEXT_HIDDEN = 16  # = the transformer's joint_attention_dim, as 3584 is for the real Qwen2.5-VL-7B
LATENT_CHANNELS = 4
# Qwen/Qwen-Image-Edit*'s scheduler/scheduler_config.json values (dynamic exponential shift).
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
# Qwen2-VL's own processor defaults (3136 .. 12845056 pixels, 14-px patches merged 2x2), as the real checkpoints.
PROCESSOR = {
    "min_pixels": 56 * 56,
    "max_pixels": 28 * 28 * 16384,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}


def pipeline_class_of(variant: str):
    """The diffusers pipeline class of `variant`."""
    import diffusers

    return getattr(diffusers, VARIANTS[variant])


def template_prefix(pipeline_class) -> tuple[str, int]:
    """The pipeline's system prompt + user header and how many tokens the pipeline drops (read from the installed
    diffusers, so a new template there is picked up, and a changed token count fails the build loudly)."""
    probe = pipeline_class(
        scheduler=None, vae=None, text_encoder=None, tokenizer=None, processor=None, transformer=None
    )
    template, header = probe.prompt_template_encode, "<|im_start|>user\n"
    return template[: template.index(header) + len(header)], probe.prompt_template_encode_start_idx


def edit_tokenizer(pipeline_class):
    """The local tokenizer for `pipeline_class`, checked to give the template the token count the pipeline drops."""
    prefix, dropped = template_prefix(pipeline_class)
    tokenizer = qwen_tokenizer(prefix)
    if (count := len(tokenizer(prefix)["input_ids"])) != dropped:
        raise RuntimeError(
            f"tiny Qwen tokenizer gives {count} template tokens; {pipeline_class.__name__} drops {dropped}"
        )
    return tokenizer


def text_encoder_config(tokenizer, text: dict[str, Any], vision: dict[str, Any]):
    """A Qwen2.5-VL config of these sizes whose special tokens are `tokenizer`'s (tiny here, full-size in
    benchmarks/diffusion_arch.py)."""
    from transformers import Qwen2_5_VLConfig

    ids = special_ids(tokenizer)
    return Qwen2_5_VLConfig(
        text_config={**text, **token_roles(tokenizer)},
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _text_encoder(tokenizer):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = text_encoder_config(
        tokenizer,
        text={
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "patch_size": PROCESSOR["patch_size"],
            "spatial_merge_size": PROCESSOR["merge_size"],
            "temporal_patch_size": PROCESSOR["temporal_patch_size"],
            "fullatt_block_indexes": [1],
            "window_size": 112,
        },
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**PROCESSOR), tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )


def tiny_qwen_edit_pipeline(variant: str = "2511"):
    """The stand-in pipeline in memory (seeded: the same weights every time)."""
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    STANDIN.check(variant)
    pipeline_class = pipeline_class_of(variant)
    tokenizer = edit_tokenizer(pipeline_class)
    torch.manual_seed(0)
    text_encoder = _text_encoder(tokenizer)
    torch.manual_seed(0)
    # 4 levels (3 downsamples) = 8x, like the real VAE; the pipeline reads its scale from `temperal_downsample`.
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=0,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
    )
    sharpen(vae, gain=2.0)
    torch.manual_seed(0)
    # head dim 16 = sum(axes_dims_rope); 2x2 patches of 4 latent channels in, 4 channels x 2x2 out.
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN,
        axes_dims_rope=(8, 4, 4),
        zero_cond_t=variant == "2511",
    )
    sharpen(transformer, gain=2.0, attention_gain=3.0, text_key_gain=2.0)
    return assemble(pipeline_class, tokenizer, vae=vae, text_encoder=text_encoder, transformer=transformer)


def assemble(pipeline_class, tokenizer, **models):
    """`pipeline_class` around its vae, text_encoder and transformer, with the checkpoints' scheduler settings and
    the processor over `tokenizer` (tiny here, full-size in benchmarks/diffusion_arch.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        tokenizer=tokenizer,
        processor=_processor(tokenizer),
        **models,
    )


STANDIN = VariantStandin(
    what="Qwen-Image-Edit",
    module="tiny_qwen_edit",
    stamp="qwen-image-edit",
    recipe=RECIPE,
    variants=VARIANTS,
    default="2511",
    make=tiny_qwen_edit_pipeline,
    describe=lambda variant, out: (
        f"tiny random-weight {VARIANTS[variant]} stand-in ({variant}; outputs are noise) at {out}"
    ),
)


def build_tiny_qwen_edit(path: str | Path, *, variant: str = "2511", overwrite: bool = False) -> Path:
    """Build the stand-in into `path` (a directory) and return it. Idempotent and cheap when `path` already holds
    this build (same variant and recipe); a half-written directory from a crash is rebuilt."""
    return STANDIN.build(path, variant=variant, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    return STANDIN.main(argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
