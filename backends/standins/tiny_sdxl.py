"""A tiny RANDOM-WEIGHT SDXL inpaint pipeline, for tests, demos and CPU smoke runs. Its outputs are noise.

It has the production layout (`StableDiffusionXLInpaintPipeline` with a 9-channel UNet: 4 latent + 1 mask + 4
masked-image latents, two CLIP text encoders, SDXL micro-conditioning without aesthetics score), at a size that
saves to ~11 MB and runs a 2-step 64x64 edit in well under a second on CPU. It is saved with `save_pretrained`
and loaded by the backend through the same `from_pretrained` path as the real checkpoint, with no network: the
tokenizers come from a 23-token local BPE vocabulary (transformers' own tokenizer test), not the hub.

    python -m backends.standins.tiny_sdxl DIR        # build into DIR (skipped when DIR already holds this build)
    python -m backends.standins.tiny_sdxl DIR --lora LORA_DIR --ip-adapter IPA_DIR   # + random adapters for it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backends.standins.tiny_clip import STANDIN_VERSION, build_standin

__all__ = [
    "STANDIN_VERSION",
    "build_tiny_ip_adapter",
    "build_tiny_lora",
    "build_tiny_sdxl",
    "tiny_components",
    "tiny_tokenizer",
]


# Text-encoder widths; the UNet's added-condition input is 6 time ids x 8 + the pooled projection of encoder 2.
TEXT_HIDDEN = 32
TEXT_PROJECTION = 32
TIME_EMBED = 8

_VOCAB = [
    "l",
    "o",
    "w",
    "e",
    "r",
    "s",
    "t",
    "i",
    "d",
    "n",
    "lo",
    "l</w>",
    "w</w>",
    "r</w>",
    "t</w>",
    "low</w>",
    "er</w>",
    "lowest</w>",
    "newer</w>",
    "wider",
    "<unk>",
    "<|startoftext|>",
    "<|endoftext|>",
]
_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>"]


def tiny_tokenizer(workdir: Path):
    """A CLIPTokenizer over the toy vocabulary; `model_max_length=77` as the pipeline pads to it."""
    from transformers import CLIPTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    vocab, merges = workdir / "vocab.json", workdir / "merges.txt"
    vocab.write_text(json.dumps({tok: i for i, tok in enumerate(_VOCAB)}), encoding="utf-8")
    merges.write_text("\n".join(_MERGES) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(vocab), str(merges), unk_token="<unk>", model_max_length=77)


def tiny_components(tokenizer) -> dict:
    """diffusers' own SDXL test components, with the inpaint checkpoint's 9-channel UNet. Seeded: same weights
    every build."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_PROJECTION,
        cross_attention_dim=2 * TEXT_HIDDEN,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=128,
    )
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        pad_token_id=1,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=TEXT_PROJECTION,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer,
        "image_encoder": None,
        "feature_extractor": None,
    }


def _save_pipeline(out: Path) -> None:
    from diffusers import StableDiffusionXLInpaintPipeline

    from backends.local_models import quiet_progress

    pipe = StableDiffusionXLInpaintPipeline(
        **tiny_components(tiny_tokenizer(out / "_vocab")),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    with quiet_progress():
        pipe.save_pretrained(out)


def build_tiny_sdxl(path: str | Path, *, overwrite: bool = False) -> Path:
    """Build the stand-in pipeline into `path` (a directory) and return it. Idempotent and cheap when `path`
    already holds this build; a half-written directory from a crash is rebuilt."""
    return build_standin(path, "sdxl", _save_pipeline, overwrite=overwrite)


def build_tiny_lora(pipeline_dir: str | Path, out_dir: str | Path, *, seed: int = 1) -> dict:
    """A RANDOM LoRA (rank 4, attention projections, non-zero B so it changes outputs) for the stand-in's UNet,
    saved the way diffusers saves LoRAs; returns the backend's `lora:` settings for it. Needs peft."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"], init_lora_weights=False)
    )
    StableDiffusionXLInpaintPipeline.save_lora_weights(
        str(out_dir), unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
    return {"model": str(out_dir), "weight_name": "pytorch_lora_weights.safetensors", "scheduler": "lcm"}


def build_tiny_ip_adapter(pipeline_dir: str | Path, out_dir: str | Path, *, seed: int = 2) -> dict:
    """A RANDOM IP-Adapter for the stand-in: a tiny CLIP vision encoder and the h94/IP-Adapter weight layout
    (`image_proj.*`, `ip_adapter.<k>.to_{k,v}_ip.weight` for each cross-attention, k = 1, 3, 5, ...), in
    `out_dir/models`; returns the backend's `ip_adapter:` settings for it."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    out = Path(out_dir) / "models"
    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet")
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
        projection_dim=32,
    )  # 224: diffusers' default processor
    from backends.local_models import quiet_progress

    with quiet_progress():
        CLIPVisionModelWithProjection(vision).save_pretrained(str(out / "image_encoder"))
    cross, widths = unet.config.cross_attention_dim, unet.config.block_out_channels
    weights = {
        "image_proj.proj.weight": torch.randn(4 * cross, vision.projection_dim) * 0.1,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:  # the order diffusers' loader walks them in
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[1]
        hidden = (
            widths[-1]
            if name.startswith("mid_block")
            else list(reversed(widths))[int(block)]
            if name.startswith("up_blocks")
            else widths[int(block)]
        )
        weights[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.1
        weights[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.1
        key += 2
    save_file(weights, str(out / "ip-adapter_tiny.safetensors"))
    return {"model": str(out_dir), "subfolder": "models", "weight_name": "ip-adapter_tiny.safetensors"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backends.standins.tiny_sdxl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=Path, help="directory to build into")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if DIR already holds this build")
    parser.add_argument("--lora", type=Path, metavar="LORA_DIR", help="also build a random LoRA for it (needs peft)")
    parser.add_argument("--ip-adapter", type=Path, metavar="IPA_DIR", help="also build a random IP-Adapter for it")
    args = parser.parse_args(argv)
    out = build_tiny_sdxl(args.dir, overwrite=args.overwrite)
    sys.stderr.write(f"tiny random-weight SDXL inpaint stand-in (outputs are noise) at {out}\n")
    for flag, build in (("lora", build_tiny_lora), ("ip_adapter", build_tiny_ip_adapter)):
        if getattr(args, flag) is not None:
            settings = build(out, getattr(args, flag))
            sys.stderr.write(
                f"random {flag} (outputs are noise) at {getattr(args, flag)}; backend settings:\n"
                f"  {flag}: {json.dumps(settings)}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
