"""How fast is our SDXL path? Plain diffusers against editroute's backend, in one run, on one card.

    python -m benchmarks.sdxl_speed                       # GPU: full-size random-weight SDXL inpaint, 1024^2, 30 steps
    python -m benchmarks.sdxl_speed --compile --each-tier # + torch.compile, + a row per quality tier
    python -m benchmarks.sdxl_speed --tiny                # CPU smoke run on the tiny stand-in (seconds)

Both paths run the same architecture (`benchmarks.sdxl_arch`: configs in code, random weights, no download):
  plain diffusers   fp16, the attention processor diffusers picks by default, one image per call (batch 1)
  editroute         SDXLInpaintBackend.edit(): --dtype (bf16), SDPA, channels-last, torch.compile with --compile,
                    n images batched in one call; timed by the backend's own synchronised GPU-seconds
Reported per row: seconds per image, images per hour, peak allocated memory, TFLOP/s achieved (FLOPs counted with
torch.utils.flop_counter on the pipeline's own UNet and VAE) as a share of the dense matmul rate measured in the
same run, and images/hour relative to plain diffusers. A markdown table goes to stdout, everything to --json.
`--offload model` runs our path with model CPU offload (cards with <= 16 GB).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks import sdxl_arch as arch

COLUMNS = (
    "card",
    "path",
    "tier",
    "size",
    "batch",
    "steps_run",
    "seconds_per_image",
    "images_per_hour",
    "peak_gib",
    "tflops",
    "pct_of_peak",
    "vs_plain",
    "date",
)
STRENGTH = 0.99
GUIDANCE = 8.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sdxl_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tiny", action="store_true", help="tiny stand-in on CPU in fp32 (smoke run; figures meaningless)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--size", type=int, default=1024, help="square edge in pixels (default 1024; 64 with --tiny)")
    p.add_argument("--steps", type=int, default=30, help="num_inference_steps (runs int(steps x 0.99))")
    p.add_argument("-n", type=int, default=4, help="images per request on our path (batched)")
    p.add_argument("--dtype", default=None, choices=list(arch.DTYPES), help="our path (default bf16; fp32 --tiny)")
    p.add_argument("--plain-dtype", default=None, choices=list(arch.DTYPES), help="baseline (default fp16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet on our path")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--fuse-qkv", action="store_true", help="fuse attention QKV projections on our path")
    p.add_argument("--offload", default="none", choices=["none", "model", "sequential"], help="our path")
    p.add_argument("--each-tier", action="store_true", help="also run our path for the low and medium tiers")
    p.add_argument("--repeats", type=int, default=2, help="timed requests per row")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests per row (compilation happens here)")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--json", type=Path, default=Path("sdxl_speed.json"))
    args = p.parse_args(argv)
    args.arch = "tiny" if args.tiny else "full"
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.tiny:
        args.size = 64 if args.size == 1024 else args.size
        args.dtype = args.dtype or "fp32"
        args.plain_dtype = args.plain_dtype or "fp32"
    args.dtype = args.dtype or "bf16"
    args.plain_dtype = args.plain_dtype or "fp16"
    return args


def row(
    info: dict,
    path: str,
    tier: str,
    args,
    batch: int,
    steps_run: int,
    seconds: float,
    peak: float | None,
    tflop: float,
    matmul_peak: float,
    extra: dict | None = None,
) -> dict[str, Any]:
    tflops = tflop / seconds
    return {
        "card": info["price_card"],
        "path": path,
        "tier": tier,
        "size": f"{args.size}x{args.size}",
        "batch": batch,
        "steps_run": steps_run,
        "seconds_per_image": round(seconds, 4),
        "images_per_hour": round(3600 / seconds),
        "peak_gib": peak,
        "tflops": round(tflops, 2),
        "pct_of_peak": round(100 * tflops / matmul_peak, 1),
        "vs_plain": None,
        "date": info["date"],
        **(extra or {}),
    }


def run_plain(args, info, flops, matmul_peak) -> dict[str, Any]:
    """Plain diffusers: the pipeline as built, `.to(device)`, one image per call."""
    import torch

    pipe = arch.build_pipeline(args.arch, args.device, args.plain_dtype)
    pipe.to(args.device)
    image, mask = arch.pil_inputs(args.size, args.size)

    def call(seed: int) -> float:
        arch.synchronize(args.device)
        start = time.perf_counter()
        pipe(
            prompt="a red leather armchair",
            image=image,
            mask_image=mask,
            height=args.size,
            width=args.size,
            num_inference_steps=args.steps,
            strength=STRENGTH,
            guidance_scale=GUIDANCE,
            generator=torch.Generator("cpu").manual_seed(seed),
        )
        arch.synchronize(args.device)
        return time.perf_counter() - start

    arch.reset_peak(args.device)
    for i in range(args.warmup):
        call(i)
    times = [call(100 + i) for i in range(args.repeats * args.n)]  # the same n images, one per call
    peak = arch.peak_gib(args.device)
    pipe = None  # noqa: F841 - free the baseline's memory before our path is built
    arch.free_memory(args.device)
    steps_run = int(args.steps * STRENGTH)
    seconds = sum(times) / len(times)
    return row(
        info,
        "plain diffusers",
        tier_label(args.steps),
        args,
        1,
        steps_run,
        seconds,
        peak,
        arch.tflop_per_image(flops, steps_run, True),
        matmul_peak,
        {"dtype": args.plain_dtype, "note": "default attention processor, batch 1"},
    )


def tier_label(steps: int, name: str = "high") -> str:
    from backends.diffusion.sdxl_settings import TIERS

    return name if TIERS[name].steps == steps else f"{steps} steps"


def run_ours(args, info, flops, matmul_peak) -> list[dict[str, Any]]:
    from backends.diffusion import runtime as rt

    backend = arch.make_backend(
        args.arch,
        device=args.device,
        dtype=args.dtype,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        fuse_qkv=args.fuse_qkv,
        offload=args.offload,
        target_megapixels=args.size**2 / 1024**2,
        tiers={"high": {"steps": args.steps, "guidance_scale": GUIDANCE, "strength": STRENGTH}},
    )
    settings = backend.settings
    runs = [("high", n) for n in sorted({1, args.n})]
    if args.each_tier:
        runs += [("medium", args.n), ("low", args.n)]
    rows = []
    for quality, batch in runs:
        req = arch.bench_request(args.size, batch, quality, f"bench-{quality}-{batch}")
        arch.reset_peak(args.device)
        warm = [backend.edit(req).timings["total_s"] for _ in range(args.warmup)]
        results = [backend.edit(req) for _ in range(args.repeats)]
        peak = arch.peak_gib(args.device)
        tier = settings.tiers[quality]
        seconds = sum(r.usage.gpu_seconds for r in results) / (batch * len(results))
        e2e = sum(r.timings["total_s"] for r in results) / (batch * len(results))
        label = tier_label(args.steps) if quality == "high" else quality
        rows.append(
            row(
                info,
                "editroute",
                label,
                args,
                batch,
                tier.steps_run,
                seconds,
                peak,
                arch.tflop_per_image(flops, tier.steps_run, tier.guided),
                matmul_peak,
                {
                    "dtype": args.dtype,
                    "e2e_seconds_per_image": round(e2e, 4),
                    "warmup_s": [round(w, 2) for w in warm],
                    "options": ", ".join(rt.get_pipeline(settings).notes) or "defaults",
                },
            )
        )
    rt.clear_cache()
    return rows


def markdown(info: dict, matmul_peak: float, flops: dict, rows: list[dict], args) -> str:
    lines = [
        arch.header(info),
        f"architecture: {args.arch} SDXL inpaint, random weights; {args.size}x{args.size}, {args.steps} steps "
        f"(runs {int(args.steps * STRENGTH)}), guidance {GUIDANCE}",
        f"measured dense matmul peak ({args.dtype}): {matmul_peak:.3g} TFLOP/s; counted per UNet forward "
        f"{flops['unet_forward']:.3f} TFLOP, VAE encode {flops['vae_encode']:.3f}, decode "
        f"{flops['vae_decode']:.3f}",
        "",
        *arch.table(COLUMNS, rows),
        "",
        *verdicts(rows, args),
    ]
    return "\n".join(lines)


def verdicts(rows: list[dict], args) -> list[str]:
    """The issue's targets, stated against this run's figures (measurements, not pass/fail tests)."""
    out = []
    plain = next((r for r in rows if r["path"] == "plain diffusers"), None)
    ours = [r for r in rows if r["path"] == "editroute" and r["tier"] == (plain or {}).get("tier", r["tier"])]
    best = max(ours, key=lambda r: r["images_per_hour"], default=None)
    if plain and best:
        out.append(
            f"- speed: editroute {best['images_per_hour']} vs plain {plain['images_per_hour']} images/hour = "
            f"{best['vs_plain']}x (target >= 1.5x)"
        )
    if best:
        out.append(
            f"- utilisation: {best['pct_of_peak']}% of measured matmul peak at batch {best['batch']} (target >= 40%)"
        )
    for r in ours:
        if r["peak_gib"] is not None and r["batch"] in (1, 4):
            limit = 12 if r["batch"] == 1 else 22
            out.append(f"- memory at n={r['batch']}: {r['peak_gib']} GiB peak ({r['dtype']}; target <= {limit} GiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = arch.start(args.device)
    if info is None:
        return 2
    matmul_peak = arch.matmul_peak_tflops(args.device, args.dtype)
    flops = arch.count_flops(args.arch, args.size, args.size)
    rows = [] if args.skip_plain else [run_plain(args, info, flops, matmul_peak)]
    rows += run_ours(args, info, flops, matmul_peak)
    plain = rows[0] if rows and rows[0]["path"] == "plain diffusers" else None
    for r in rows:
        if plain is not None:
            r["vs_plain"] = round(r["images_per_hour"] / plain["images_per_hour"], 2)
    print(markdown(info, matmul_peak, flops, rows, args))
    report = {
        "info": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "matmul_peak_tflops": matmul_peak,
        "flops_tflop": flops,
        "rows": rows,
    }
    arch.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
