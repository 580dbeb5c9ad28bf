"""A tiny RANDOM-WEIGHT FLUX.2 [klein] pipeline (`Flux2KleinPipeline`), for tests, demos and CPU smoke runs. Its
outputs are noise.

It has the production layout and classes of black-forest-labs/FLUX.2-klein-4B: a Qwen3 causal LM as text encoder
(the pipeline stacks its hidden states 9, 18 and 27, so the tiny one has 28 layers), a local byte-level Qwen2
tokenizer with a Qwen3-style chat template (see `tiny_qwen_parts`), a `Flux2Transformer2DModel` without guidance
embedding, an `AutoencoderKLFlux2` with the real 8x compression (4 levels) and 2x2 latent patches, and a
flow-matching scheduler. Two variants:

    distilled   is_distilled=True, as FLUX.2-klein-4B / -9B (4 steps, guidance ignored; the default)
    base        is_distilled=False, as FLUX.2-klein-base-4B / -9B (classifier-free guidance when guidance > 1)

It is written with `save_pretrained` and loads with `Flux2KleinPipeline.from_pretrained(DIR)` exactly as production
loads a hub id, offline. Weights are sharpened (`tiny_qwen_parts.sharpen`) so outputs react to the prompt and to
every reference image. Klein does not upscale references (only those over 1 MP are shrunk), so small test images
stay cheap; each must be at least 64 px a side.

    python -m backends.standins.tiny_flux2_klein DIR [--variant distilled|base] [--overwrite]
"""

from __future__ import annotations

from pathlib import Path

from backends.standins.tiny_qwen_parts import VariantStandin, qwen_tokenizer, sharpen, token_roles

__all__ = ["RECIPE", "VARIANTS", "assemble", "build_tiny_flux2_klein", "klein_tokenizer", "tiny_flux2_klein_pipeline"]

RECIPE = 1  # bump when the recipe changes, so existing builds are rebuilt
VARIANTS = {"distilled": True, "base": False}  # variant -> is_distilled

TEXT_HIDDEN = 16
TEXT_LAYERS = 28  # >= 27: the pipeline's default text_encoder_out_layers are (9, 18, 27)
LATENT_CHANNELS = 4
# Qwen3's chat format for one user turn with thinking disabled (what the pipeline renders), as a minimal template.
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)
THINK = ("<think>", "</think>")
# FLUX-family flow-matching settings; klein's pipeline passes its own empirical `mu`, which needs dynamic shifting.
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def klein_tokenizer():
    """The local Qwen3-style tokenizer with klein's chat template (tiny here, full-size in
    benchmarks/diffusion_arch.py)."""
    chat = "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    return qwen_tokenizer(chat, extra_specials=THINK, chat_template=CHAT_TEMPLATE)


def _text_encoder(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        **token_roles(tokenizer),
    )
    return Qwen3ForCausalLM(config).eval()


def tiny_flux2_klein_pipeline(variant: str = "distilled"):
    """The stand-in pipeline in memory (seeded: the same weights every time)."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    STANDIN.check(variant)
    tokenizer = klein_tokenizer()
    torch.manual_seed(0)
    text_encoder = _text_encoder(tokenizer)
    torch.manual_seed(0)
    # 4 levels = 8x, as the real VAE; the pipeline derives its scale from len(block_out_channels).
    vae = AutoencoderKLFlux2(
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=2,
        sample_size=64,
    )
    sharpen(vae, gain=2.0)
    torch.manual_seed(0)
    # Latents are patchified 2x2 before the transformer: 4 channels x 4 in; head dim 16 = sum(axes_dims_rope).
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_HIDDEN,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    sharpen(transformer, gain=2.0, attention_gain=3.0, text_key_gain=2.0)
    return assemble(
        tokenizer, is_distilled=VARIANTS[variant], vae=vae, text_encoder=text_encoder, transformer=transformer
    )


def assemble(tokenizer, *, is_distilled: bool, **models):
    """Flux2KleinPipeline around its vae, text_encoder and transformer, with the FLUX flow-matching scheduler
    (tiny here, full-size in benchmarks/diffusion_arch.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), tokenizer=tokenizer, is_distilled=is_distilled, **models
    )


STANDIN = VariantStandin(
    what="FLUX.2 klein",
    module="tiny_flux2_klein",
    stamp="flux2-klein",
    recipe=RECIPE,
    variants=VARIANTS,
    default="distilled",
    make=tiny_flux2_klein_pipeline,
    describe=lambda variant, out: (
        f"tiny random-weight Flux2KleinPipeline stand-in ({variant}; outputs are noise) at {out}"
    ),
)


def build_tiny_flux2_klein(path: str | Path, *, variant: str = "distilled", overwrite: bool = False) -> Path:
    """Build the stand-in into `path` (a directory) and return it. Idempotent and cheap when `path` already holds
    this build (same variant and recipe); a half-written directory from a crash is rebuilt."""
    return STANDIN.build(path, variant=variant, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    return STANDIN.main(argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
