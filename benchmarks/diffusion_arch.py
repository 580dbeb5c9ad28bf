"""Every self-hosted diffusion family at FULL architecture with RANDOM weights, built from configs written here: for
timing on a GPU box with no internet (no download, no weights). Outputs are noise; speed and memory are those of
the real models, which depend on shapes only. `sdxl_arch.py` holds SDXL's; this module adds Qwen-Image-Edit-2511
and FLUX.2 klein 4B and gives all three one interface (`ARCHS`) for `diffusion_speed.py`.

Full-size configs: Qwen-Image's transformer is diffusers' `QwenImageTransformer2DModel()` defaults (60 blocks, 20.4B)
with `zero_cond_t` (2511); Qwen2.5-VL-7B and Qwen3-4B from their public configs; the VAEs are the classes'
defaults; klein 4B's transformer from diffusers' `scripts/convert_flux2_to_diffusers.py`. Tokenizers and the Qwen
image processor come from the tiny stand-ins (local, offline; the prompt's token count barely matters at ~8k
image tokens), with the real vocabulary sizes. Parameters are created directly on the device in bf16 (Qwen in
fp32 would need 110 GiB).

    python -m benchmarks.diffusion_arch --count-flops   # TFLOP per transformer pass (configs/gpu_speeds.yaml)
    python -m benchmarks.diffusion_arch --dry-run       # build every full pipeline on the meta device (no memory)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from backends import local_models
from backends.diffusion import runtime as rt
from benchmarks import sdxl_arch

QWEN_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    axes_dims_rope=(16, 56, 56),
    guidance_embeds=False,
    zero_cond_t=True,
)
QWEN_TEXT = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
)
QWEN_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
)
KLEIN_TRANSFORMER = dict(
    patch_size=1,
    in_channels=128,
    num_layers=5,
    num_single_layers=20,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=7680,
    timestep_guidance_channels=256,
    mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32),
    rope_theta=2000,
    eps=1e-6,
    guidance_embeds=False,
)
KLEIN_TEXT = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
    max_position_embeddings=40960,
)


@contextmanager
def on_device(device: str, dtype: str):
    """Modules built inside get their parameters on `device` in `dtype` directly (no fp32 copy on the CPU)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(sdxl_arch.torch_dtype(dtype))
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _qwen_full(device: str, dtype: str):
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from backends.standins import tiny_qwen_edit as tq

    pipeline_class = tq.pipeline_class_of("2511")
    tokenizer = tq.edit_tokenizer(pipeline_class)
    config = tq.text_encoder_config(tokenizer, QWEN_TEXT, QWEN_VISION)
    with on_device(device, dtype):
        models = dict(
            text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(),
            transformer=QwenImageTransformer2DModel(**QWEN_TRANSFORMER),
            vae=AutoencoderKLQwenImage(),
        )
    return tq.assemble(pipeline_class, tokenizer, **models)


def _klein_full(device: str, dtype: str):
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from backends.standins import tiny_flux2_klein as tk
    from backends.standins.tiny_qwen_parts import token_roles

    tokenizer = tk.klein_tokenizer()
    config = Qwen3Config(**KLEIN_TEXT, **token_roles(tokenizer))
    with on_device(device, dtype):
        models = dict(
            text_encoder=Qwen3ForCausalLM(config).eval(),
            transformer=Flux2Transformer2DModel(**KLEIN_TRANSFORMER),
            vae=AutoencoderKLFlux2(),
        )
    return tk.assemble(tokenizer, is_distilled=True, **models)


def _tiny(make: Callable[[], Any]) -> Callable[[str, str], Any]:
    def build(device: str, dtype: str):
        pipe = make()
        return pipe.to(device=device, dtype=sdxl_arch.torch_dtype(dtype))

    return build


def _tiny_qwen():
    from backends.standins.tiny_qwen_edit import tiny_qwen_edit_pipeline

    return tiny_qwen_edit_pipeline("2511")


def _tiny_klein():
    from backends.standins.tiny_flux2_klein import tiny_flux2_klein_pipeline

    return tiny_flux2_klein_pipeline("distilled")


@dataclass(frozen=True)
class Arch:
    """One family for the benchmark: how to build its pipeline and what a plain-diffusers call passes."""

    kind: str  # the backend kind
    build_full: Callable[[str, str], Any]
    build_tiny: Callable[[str, str], Any]
    steps: int  # the reference job: the tier the published quality figures are for
    guidance: float
    masked: bool  # the reference job edits under a mask (SDXL inpainting) or not (instruction editors)

    def build(self, arch: str, device: str, dtype: str):
        pipe = (self.build_full if arch == "full" else self.build_tiny)(device, dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def plain_kwargs(self, images: list, mask, size: int, steps: int) -> dict[str, Any]:
        """A plain diffusers call with the same settings as our path (no paste-back, one image per call)."""
        common = dict(prompt="a red leather armchair", height=size, width=size, num_inference_steps=steps)
        if self.kind == "sdxl":
            return dict(common, image=images[0], mask_image=mask, strength=0.99, guidance_scale=self.guidance)
        if self.kind == "qwen-edit":
            guided = self.guidance > 1
            return dict(common, image=images, true_cfg_scale=self.guidance, negative_prompt=" " if guided else None)
        return dict(common, image=images, guidance_scale=1.0)


ARCHS: dict[str, Arch] = {
    "sdxl": Arch(
        "sdxl",
        lambda device, dtype: sdxl_arch.build_pipeline("full", device, dtype),
        lambda device, dtype: sdxl_arch.build_pipeline("tiny", device, dtype),
        steps=30,
        guidance=8.0,
        masked=True,
    ),
    "qwen-edit": Arch("qwen-edit", _qwen_full, _tiny(_tiny_qwen), steps=40, guidance=4.0, masked=False),
    "flux2-klein": Arch("flux2-klein", _klein_full, _tiny(_tiny_klein), steps=4, guidance=1.0, masked=False),
}


def make_backend(kind: str, arch: str, pipe: Any, name: str = "editroute", **settings: Any):
    """The family's backend over an already-built pipeline, registered in the runtime's cache under these
    settings (so `edit()` runs the production path end to end, minus `from_pretrained`)."""
    from backends.registry import backend_class

    cls = backend_class(kind)
    parsed = cls.Settings(model=f"editroute-bench/{kind}-{arch}-random-weights", **settings)
    rt.register_pipeline(parsed, pipe)
    return cls(name, parsed)


def resolved(kind: str, device: str, dtype: str) -> tuple[str, str]:
    """The device and dtype the backend's settings resolve to (auto -> cuda and the family's accelerator dtype)."""
    from backends.registry import backend_class

    family = backend_class(kind).Settings.family
    where = local_models.resolve_device(device)
    return where, local_models.resolve_dtype(dtype, where, family.accelerator_dtype)


def count_flops(size: int = 1024) -> dict[str, float]:
    """TFLOP of one transformer pass over a size^2 output plus one size^2 input, on the meta device."""
    import torch
    from diffusers import Flux2Transformer2DModel, QwenImageTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    tokens = (size // 16) ** 2
    out = {}
    with torch.device("meta"), torch.no_grad():
        qwen = QwenImageTransformer2DModel(**QWEN_TRANSFORMER)
        text = 128
        with FlopCounterMode(display=False) as counter:
            qwen(
                hidden_states=torch.randn(1, 2 * tokens, 64),
                encoder_hidden_states=torch.randn(1, text, 3584),
                encoder_hidden_states_mask=torch.ones(1, text, dtype=torch.long),
                timestep=torch.tensor([0.5]),
                img_shapes=[[(1, size // 16, size // 16)] * 2],
                return_dict=False,
            )
        out["qwen-edit pass (1 MP out + 1 MP in, 128 text tokens)"] = counter.get_total_flops() / 1e12
        klein = Flux2Transformer2DModel(**KLEIN_TRANSFORMER)
        with FlopCounterMode(display=False) as counter:
            klein(
                hidden_states=torch.randn(1, 2 * tokens, 128),
                encoder_hidden_states=torch.randn(1, 512, 7680),
                timestep=torch.tensor([0.5]),
                guidance=None,
                txt_ids=torch.zeros(1, 512, 4),
                img_ids=torch.zeros(1, 2 * tokens, 4),
                return_dict=False,
            )
        out["flux2-klein pass (1 MP out + 1 MP in, 512 text tokens)"] = counter.get_total_flops() / 1e12
    return out


def dry_run() -> list[str]:
    """Build every full-size pipeline on the meta device: the configs assemble (no memory, no forward)."""
    lines = []
    for kind in ("qwen-edit", "flux2-klein"):
        pipe = ARCHS[kind].build("full", "meta", "bf16")
        params = {
            name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9
            for name in ("transformer", "text_encoder", "vae")
        }
        lines.append(f"{kind}: {type(pipe).__name__} " + ", ".join(f"{k} {v:.2f}B" for k, v in params.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.diffusion_arch", description=__doc__)
    p.add_argument("--count-flops", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.count_flops:
        for what, tflop in count_flops().items():
            print(f"{what}: {tflop:.1f} TFLOP")
    if args.dry_run:
        print("\n".join(dry_run()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
