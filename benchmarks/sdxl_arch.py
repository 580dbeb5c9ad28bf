"""The SDXL inpaint architecture with RANDOM weights, built from configs written here: for timing on a GPU box with
no internet (no download, no weights). Outputs are noise; speed and memory are those of the real model, since
they depend on shapes only. Shared by `gpu_check.py` and `sdxl_speed.py`.

`full`: the configs of `diffusers/stable-diffusion-xl-1.0-inpainting-0.1` (9-channel UNet, 2.57 B params; SDXL VAE;
CLIP ViT-L and OpenCLIP bigG text encoders), with tokenizers from a toy local vocabulary (the prompt is padded
to 77 tokens either way, so the compute is the same). `tiny`: `backends.standins.tiny_sdxl`, for CPU smoke runs.
"""

from __future__ import annotations

import io
import json
import logging
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from backends import local_models
from backends.diffusion import runtime as rt  # light: torch is imported inside its functions
from backends.diffusion.runtime import DTYPES, free_memory, synchronize  # benchmarks time and free as the backend does

# unet/config.json of diffusers/stable-diffusion-xl-1.0-inpainting-0.1
FULL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    center_input_sample=False,
    cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=9,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)
# vae/config.json (SDXL VAE)
FULL_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=1024,
    scaling_factor=0.13025,
    up_block_types=["UpDecoderBlock2D"] * 4,
    force_upcast=True,
)
# text_encoder (CLIP ViT-L/14) and text_encoder_2 (OpenCLIP ViT-bigG/14, with projection)
FULL_TEXT_1 = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    vocab_size=49408,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
FULL_TEXT_2 = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    vocab_size=49408,
    hidden_act="gelu",
    projection_dim=1280,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def build_pipeline(arch: str, device: str, dtype: str):
    """A StableDiffusionXLInpaintPipeline with random weights, parameters created on `device` in `dtype`."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from backends.standins import tiny_sdxl

    rt.quiet_float32_notice()
    vocab_dir = Path(tempfile.mkdtemp(prefix="editroute-vocab-"))
    tokenizer = tiny_sdxl.tiny_tokenizer(vocab_dir)
    if arch == "tiny":
        parts = tiny_sdxl.tiny_components(tokenizer)
        parts = {
            k: (v.to(device=device, dtype=torch_dtype(dtype)) if isinstance(v, torch.nn.Module) else v)
            for k, v in parts.items()
        }
    elif arch == "full":
        torch.manual_seed(0)
        # Parameters are created directly on the device: initialising 3.5 B random weights on a CPU takes minutes.
        with torch.device(device) if device != "cpu" else nullcontext():
            parts = {
                "unet": UNet2DConditionModel(**FULL_UNET).to(torch_dtype(dtype)),
                "vae": AutoencoderKL(**FULL_VAE).to(torch_dtype(dtype)),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**FULL_TEXT_1)).to(torch_dtype(dtype)),
                "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**FULL_TEXT_2)).to(torch_dtype(dtype)),
            }
        parts.update(
            scheduler=EulerDiscreteScheduler(**SCHEDULER),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            image_encoder=None,
            feature_extractor=None,
        )
    else:
        raise ValueError(f"unknown arch {arch!r} (full, tiny)")
    pipe = StableDiffusionXLInpaintPipeline(
        **parts, requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_images(width: int, height: int) -> tuple[bytes, bytes]:
    """A structured test picture and an OpenAI-convention mask (alpha 0 = edit) covering its centre quarter."""
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    pic = Image.fromarray(np.stack([x, y, (x // 2 + y // 2)], axis=-1), "RGB")
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle(
        (width // 4, height // 4, 3 * width // 4 - 1, 3 * height // 4 - 1), fill=(0, 0, 0, 0)
    )
    out = []
    for img in (pic, mask):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def pil_inputs(width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """The same picture, and its diffusers mask (white = repaint), as PIL images for a plain pipeline call."""
    pic, mask = bench_images(width, height)
    alpha = np.asarray(Image.open(io.BytesIO(mask)).getchannel("A"))
    return Image.open(io.BytesIO(pic)).convert("RGB"), Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8))


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float | None:
    peak = rt.peak_memory_gib(device)
    return None if peak is None else round(peak, 2)


def device_info(device: str) -> dict[str, Any]:
    """What the run was on, for the report header: the card's name, memory, and library versions."""
    import diffusers
    import torch

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(
            card=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
        )
    else:
        info.update(
            card=f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            memory_gib=None,
        )
    info["price_card"] = price_card(info["card"])
    return info


def start(device: str) -> dict[str, Any] | None:
    """Every benchmark's preamble: quiet logging, then `device_info(device)`; None (said on stderr) when `device`
    is CUDA and there is none here."""
    logging.basicConfig(level=logging.WARNING)
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write("no CUDA device here: run on a GPU box, or use --tiny for a CPU smoke run\n")
        return None
    return device_info(device)


def header(info: dict[str, Any]) -> str:
    """The report's first line: card, memory, price card, library versions, date."""
    mem = f", {info['memory_gib']} GiB" if info.get("memory_gib") else ""
    return (
        f"card: {info['card']}{mem} (prices.yaml: {info['price_card']}); torch {info['torch']}, diffusers "
        f"{info['diffusers']}" + (f", CUDA {info['cuda']}" if info.get("cuda") else "") + f"; {info['date']}"
    )


def table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table of `rows` (missing cells empty); a row with an "error" says it after the row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join("" if r.get(c) is None else str(r[c]) for c in columns)
            + " |"
            + (f" error: {r['error']}" if r.get("error") else "")
        )
    return lines


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    sys.stderr.write(f"wrote {path}\n")


def price_card(name: str) -> str:
    """The configs/prices.yaml gpu_hourly key for a device name (so bench cost can use the figure), else the name."""
    upper = name.upper()
    words = upper.replace("-", " ").split()
    if "H100" in upper:
        return "H100"
    if "A100" in upper:
        return "A100-80GB"
    if "L40S" in words:
        return "L40S"
    if "L4" in words:
        return "L4"
    if "4090" in upper:
        return "RTX-4090"
    return name


def matmul_peak_tflops(device: str, dtype: str, size: int = 8192, iters: int = 20) -> float:
    """Measured dense matmul rate: the ceiling the pipelines' TFLOP/s are compared against."""
    import torch

    if device == "cpu":
        size, iters = 1024, 5
    a = torch.randn(size, size, device=device, dtype=torch_dtype(dtype))
    b = torch.randn(size, size, device=device, dtype=torch_dtype(dtype))
    for _ in range(3):
        torch.matmul(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    synchronize(device)
    elapsed = time.perf_counter() - start
    del a, b
    free_memory(device)
    return 2 * size**3 * iters / elapsed / 1e12


def count_flops(arch: str, width: int, height: int) -> dict[str, float]:
    """TFLOP of one UNet forward (batch 1), one VAE encode and one VAE decode at this size, counted with
    torch.utils.flop_counter on the architecture instantiated on the meta device (no memory, no weights;
    matmul/conv FLOPs, 2 per multiply-add)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from backends.standins import tiny_sdxl

    if arch == "full":
        where = torch.device("meta")
        with where:
            unet, vae, pooled_dim = UNet2DConditionModel(**FULL_UNET), AutoencoderKL(**FULL_VAE), 1280
    else:  # the scheduler cannot live on meta; the tiny modules are cheap on the CPU
        where = torch.device("cpu")
        parts = tiny_sdxl.tiny_components(None)
        unet, vae, pooled_dim = parts["unet"], parts["vae"], tiny_sdxl.TEXT_PROJECTION
    with where:
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        lat = (1, 4, height // f, width // f)
        out = {}
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                unet(
                    torch.randn(1, unet.config.in_channels, *lat[2:]),
                    500,
                    encoder_hidden_states=torch.randn(1, 77, unet.config.cross_attention_dim),
                    added_cond_kwargs={"text_embeds": torch.randn(1, pooled_dim), "time_ids": torch.randn(1, 6)},
                )
            out["unet_forward"] = counter.get_total_flops() / 1e12
            with FlopCounterMode(display=False) as counter:
                vae.encode(torch.randn(1, 3, height, width))
            out["vae_encode"] = counter.get_total_flops() / 1e12
            with FlopCounterMode(display=False) as counter:
                vae.decode(torch.randn(*lat))
            out["vae_decode"] = counter.get_total_flops() / 1e12
    return out


def tflop_per_image(flops: dict[str, float], steps_run: int, guided: bool, strength_below_one: bool = True) -> float:
    """One inpaint image: steps x UNet (x2 with CFG) + VAE encodes (image and masked image) + one decode."""
    encodes = 2 if strength_below_one else 1
    return (
        steps_run * flops["unet_forward"] * (2 if guided else 1) + encodes * flops["vae_encode"] + flops["vae_decode"]
    )


def make_backend(arch: str, name: str = "editroute", **settings: Any):
    """SDXLInpaintBackend over a random-weight pipeline of `arch`, registered in the backend's process-wide cache
    (so `edit()` runs the production code path end to end, minus `from_pretrained`)."""
    from backends.diffusion.sdxl import SDXLInpaintBackend, Settings

    parsed = Settings(model=f"editroute-bench/{arch}-random-weights", **settings)
    device = local_models.resolve_device(parsed.device)
    dtype = local_models.resolve_dtype(parsed.dtype, device)
    rt.register_pipeline(parsed, build_pipeline(arch, device if parsed.offload == "none" else "cpu", dtype))
    return SDXLInpaintBackend(name, parsed)


def bench_request(size: int, n: int, quality: str, job_id: str, output_format: str = "jpeg"):
    """A size x size edit of the centre quarter; output size = input size."""
    from backends.base import EditRequest
    from backends.images import InputImage

    pic, mask = bench_images(size, size)
    return EditRequest(
        prompt="a red leather armchair",
        images=(InputImage.from_bytes(pic, "bench.png"),),
        mask=InputImage.from_bytes(mask, "mask.png", field="mask"),
        quality=quality,
        n=n,
        size="auto",
        output_format=output_format,
        output_compression=90 if output_format != "png" else None,
        job_id=job_id,
    )
