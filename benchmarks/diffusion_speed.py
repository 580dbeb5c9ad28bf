"""How fast is each self-hosted diffusion family, whole edit included? Plain diffusers against editroute's backend
with each optimisation, in one run, on one card, at full architecture with random weights (no download).

    python -m benchmarks.diffusion_speed                                 # GPU: every family, every row
    python -m benchmarks.diffusion_speed --families qwen-edit --qwen-steps 8 --rows plain,editroute,compile
    python -m benchmarks.diffusion_speed --tiny                          # CPU smoke run on the stand-ins (seconds)

Families (`diffusion_arch.ARCHS`): sdxl (masked inpaint, 30 steps, CFG 8), qwen-edit (Qwen-Image-Edit-2511, 40
steps, true CFG 4, one input image), flux2-klein (4B distilled, 4 steps). Rows (each on a freshly built pipeline):
  plain       plain diffusers, the same dtype, size, steps and guidance: decode the input, one pipeline call,
              encode the output (no paste-back: plain diffusers has none)
  editroute   the backend's edit(): decode and check, prepare, pipeline, paste-back (SDXL's mask), encode
  compile     + torch.compile (the transformers' repeated blocks; SDXL's whole UNet)
  fused_qkv   + fused QKV projections (SDXL, klein)
  attention   + --attention-backend (diffusers' dispatcher: _native_cudnn by default; flash needs flash-attn)
  fp8         + fp8 weight storage (layerwise casting: memory, not speed)
  fbcache     + first-block cache (threshold --fbcache); with RANDOM weights its skip rate means nothing:
              the row measures the mechanism's cost only; real speed-ups need real weights
Reported per row: seconds per image for the WHOLE edit (wall, after --warmup untimed edits), of which the pipeline
call (device-synchronised) and the paste-back + encoding, images/hour, peak allocated GiB, the build time (random
weights materialised on the device, in place of a load), and images/hour relative to plain diffusers.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import diffusion_arch as darch
from benchmarks import sdxl_arch as arch

COLUMNS = (
    "card",
    "family",
    "path",
    "size",
    "steps",
    "inputs",
    "seconds_per_image",
    "images_per_hour",
    "pipeline_s",
    "post_s",
    "peak_gib",
    "build_s",
    "vs_plain",
    "date",
)
ROWS: dict[str, dict[str, Any]] = {
    "editroute": {},
    "compile": {"compile": True},
    "fused_qkv": {"fuse_qkv": True},
    "attention": {"attention_backend": None},  # filled from --attention-backend
    "fp8": {"fp8": True},
    "fbcache": {"first_block_cache": None},  # filled from --fbcache
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.diffusion_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tiny", action="store_true", help="tiny stand-ins on CPU in fp32 (smoke run; figures meaningless)")
    p.add_argument("--families", default="sdxl,qwen-edit,flux2-klein")
    p.add_argument("--rows", default="plain,editroute,compile,fused_qkv,attention,fp8,fbcache")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--dtype", default=None, choices=list(arch.DTYPES), help="both paths (default bf16; fp32 --tiny)")
    p.add_argument("--size", type=int, default=None, help="square output edge (default 1024; 64 with --tiny)")
    p.add_argument("--inputs", type=int, default=1, help="input images per instruction edit (default 1)")
    p.add_argument("--sdxl-steps", type=int, default=None, help="default 30 (2 with --tiny)")
    p.add_argument("--qwen-steps", type=int, default=None, help="default 40 (2 with --tiny)")
    p.add_argument("--klein-steps", type=int, default=None, help="default 4 (2 with --tiny)")
    p.add_argument("--attention-backend", default="_native_cudnn", help="for the attention row")
    p.add_argument("--fbcache", type=float, default=0.08, help="first-block cache threshold for the fbcache row")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--repeats", type=int, default=2, help="timed edits per row")
    p.add_argument("--warmup", type=int, default=1, help="untimed edits per row (compilation happens here)")
    p.add_argument("--json", type=Path, default=Path("diffusion_speed.json"))
    args = p.parse_args(argv)
    args.arch = "tiny" if args.tiny else "full"
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.dtype = args.dtype or ("fp32" if args.tiny else "bf16")
    args.size = args.size or (64 if args.tiny else 1024)
    steps = {"sdxl": args.sdxl_steps, "qwen-edit": args.qwen_steps, "flux2-klein": args.klein_steps}
    args.steps = {k: v or (2 if args.tiny else darch.ARCHS[k].steps) for k, v in steps.items()}
    ROWS["attention"]["attention_backend"] = args.attention_backend
    ROWS["fbcache"]["first_block_cache"] = args.fbcache
    return args


def inputs(size: int, count: int) -> tuple[list[bytes], bytes]:
    """`count` input pictures (PNG) and an OpenAI-convention mask over the first one's centre quarter."""
    pic, mask = arch.bench_images(size, size)
    from PIL import Image, ImageOps

    others = []
    for k in range(1, count):
        buf = io.BytesIO()
        ImageOps.mirror(Image.open(io.BytesIO(pic))).rotate(90 * k).save(buf, format="PNG")
        others.append(buf.getvalue())
    return [pic, *others], mask


def request(family: str, size: int, count: int):
    from backends.base import EditRequest
    from backends.images import InputImage

    pics, mask = inputs(size, count if family != "sdxl" else 1)
    return EditRequest(
        prompt="a red leather armchair",
        images=tuple(InputImage.from_bytes(p, f"in{i}.png") for i, p in enumerate(pics)),
        mask=InputImage.from_bytes(mask, "mask.png", field="mask") if darch.ARCHS[family].masked else None,
        quality="high",
        size="auto",
        output_format="jpeg",
        output_compression=90,
        seed=1,
        job_id=f"bench-{family}",
    ).materialized()


def _row(info, family, path, args, count, times, pipeline, post, peak, build_s) -> dict[str, Any]:
    seconds = statistics.mean(times)
    return {
        "card": info["price_card"],
        "family": family,
        "path": path,
        "size": f"{args.size}x{args.size}",
        "steps": args.steps[family],
        "inputs": count,
        "seconds_per_image": round(seconds, 4),
        "images_per_hour": round(3600 / seconds),
        "pipeline_s": round(statistics.mean(pipeline), 4) if pipeline else None,
        "post_s": round(statistics.mean(post), 4) if post else None,
        "peak_gib": peak,
        "build_s": round(build_s, 1),
        "vs_plain": None,
        "date": info["date"],
    }


def run_plain(family: str, args, info) -> dict[str, Any]:
    """Plain diffusers: the pipeline as built, `.to(device)`; decode, one call, encode, per image."""
    import torch
    from PIL import Image

    a = darch.ARCHS[family]
    start = time.perf_counter()
    pipe = a.build(args.arch, args.device, args.dtype)
    pipe.to(args.device)
    build_s = time.perf_counter() - start
    count = 1 if family == "sdxl" else args.inputs
    pics, mask_png = inputs(args.size, count)
    alpha = Image.open(io.BytesIO(mask_png)).getchannel("A")
    mask = alpha.point(lambda v: 255 if v == 0 else 0)

    def edit(pipe, seed: int) -> tuple[float, float]:
        arch.synchronize(args.device)
        begin = time.perf_counter()
        images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pics]
        kwargs = a.plain_kwargs(images, mask, args.size, args.steps[family])
        call = time.perf_counter()
        out = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        arch.synchronize(args.device)
        called = time.perf_counter() - call
        out.save(io.BytesIO(), format="JPEG", quality=90)
        return time.perf_counter() - begin, called

    arch.reset_peak(args.device)
    for i in range(args.warmup):
        edit(pipe, i)
    measured = [edit(pipe, 100 + i) for i in range(args.repeats)]
    peak = arch.peak_gib(args.device)
    del pipe
    arch.free_memory(args.device)
    return _row(
        info,
        family,
        "plain diffusers",
        args,
        count,
        [m[0] for m in measured],
        [m[1] for m in measured],
        [],
        peak,
        build_s,
    )


def run_ours(family: str, row: str, args, info) -> dict[str, Any]:
    """The backend's edit() on a fresh pipeline with this row's options."""
    from backends.diffusion import runtime as rt

    a = darch.ARCHS[family]
    options = dict(ROWS[row])
    settings: dict[str, Any] = {
        "device": args.device,
        "dtype": args.dtype,
        "compile_mode": args.compile_mode,
        "target_megapixels": args.size**2 / 1024**2,
        "tiers": {"high": {"steps": args.steps[family], "guidance_scale": a.guidance}},
        **options,
    }
    if family == "sdxl":
        settings["channels_last"] = True
        settings["tiers"]["high"]["strength"] = 0.99
    start = time.perf_counter()
    device, dtype = darch.resolved(family, args.device, args.dtype)
    try:
        backend = darch.make_backend(family, args.arch, a.build(args.arch, device, dtype), **settings)
        build_s = time.perf_counter() - start
        req = request(family, args.size, args.inputs)
        arch.reset_peak(args.device)
        for _ in range(args.warmup):
            backend.edit(req)
        times, pipeline, post = [], [], []
        for _ in range(args.repeats):
            begin = time.perf_counter()
            result = backend.edit(req)
            times.append(time.perf_counter() - begin)
            pipeline.append(result.usage.gpu_seconds)
            post.append(result.timings.get("postprocess_s", result.timings["total_s"] - result.timings["gpu_s"]))
        peak = arch.peak_gib(args.device)
        notes = ", ".join(rt.get_pipeline(backend.settings).notes) or "defaults"
    finally:  # a failed row must not keep its pipeline (or its memory) for the next
        rt.clear_cache()
    label = "editroute" if row == "editroute" else f"editroute + {row}"
    out = _row(info, family, label, args, len(req.images), times, pipeline, post, peak, build_s)
    out["options"] = notes
    return out


def applicable(family: str, row: str, device: str) -> bool:
    """Rows the family's settings have (and its pipeline supports); cuDNN attention only on a GPU."""
    from backends.registry import backend_class

    cls = backend_class(family)
    pipeline = cls.Settings.family
    if any(key not in cls.Settings.model_fields for key in ROWS[row]):
        return False
    if row == "attention" and not device.startswith("cuda"):
        return False
    if row == "fbcache" and not pipeline.first_block_cache:
        return False
    return row != "fused_qkv" or pipeline.fuse_qkv_on != "none"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = arch.start(args.device)
    if info is None:
        return 2
    rows: list[dict[str, Any]] = []
    for family in args.families.split(","):
        plain = None
        for row in args.rows.split(","):
            if row != "plain" and not applicable(family, row, args.device):
                continue
            try:
                result = run_plain(family, args, info) if row == "plain" else run_ours(family, row, args, info)
            except Exception as exc:  # e.g. out of memory, an attention backend not installed: say so, go on
                result = {
                    "card": info["price_card"],
                    "family": family,
                    "path": row,
                    "error": f"{type(exc).__name__}: {exc}",
                }
                arch.free_memory(args.device)
            if row == "plain" and "error" not in result:
                plain = result
            if plain is not None and "error" not in result:
                result["vs_plain"] = round(result["images_per_hour"] / plain["images_per_hour"], 2)
            rows.append(result)
    print(arch.header(info))
    print(
        f"full architectures with random weights; {args.size}x{args.size}; steps {args.steps}; "
        f"{args.inputs} input image(s) per instruction edit; {args.dtype}; whole edit timed (decode, prepare, "
        "pipeline, paste-back, encode)\n"
    )
    print("\n".join(arch.table(COLUMNS, rows)))
    arch.write_json(args.json, {"info": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
