"""GPU check for the SDXL backend on a machine with a GPU and no internet: the full-size SDXL inpaint architecture
with random weights (`benchmarks.sdxl_arch`, no download) through `SDXLInpaintBackend.edit()` at 1024^2, for each
quality tier at n = 1 and n = 4, and 4 jobs of n = 1 in one `edit_batch()` call (the runner's batching; compare
its seconds per image with n = 1 to choose `max_batch`). Prints seconds per image and peak memory (markdown), and
writes --json. A row that fails (e.g. out of memory) is reported and the run goes on.

    python -m benchmarks.gpu_check                    # backend defaults: fp16 on CUDA, SDPA
    python -m benchmarks.gpu_check --dtype bf16 --channels-last
    python -m benchmarks.gpu_check --offload model    # cards with <= 16 GB
    python -m benchmarks.gpu_check --tiny             # CPU smoke run on the tiny stand-in
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from backends.errors import EditError
from benchmarks import sdxl_arch as arch

COLUMNS = (
    "card",
    "tier",
    "size",
    "batch",
    "steps_run",
    "seconds_per_image",
    "e2e_seconds_per_image",
    "images_per_hour",
    "peak_gib",
    "dtype",
    "date",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="tiny stand-in on CPU (smoke run; figures meaningless)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--size", type=int, default=None, help="square edge (default 1024; 64 with --tiny)")
    p.add_argument("--dtype", default="auto", choices=["auto", *arch.DTYPES])
    p.add_argument("--offload", default="none", choices=["none", "model", "sequential"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batches", default="1,4", help="comma-separated n values (default 1,4)")
    p.add_argument(
        "--jobs",
        type=int,
        default=4,
        help="also time this many n=1 jobs in one edit_batch() call "
        "(the runner's batching, `max_batch`); 1: skip (default 4)",
    )
    p.add_argument("--tiers", default="low,medium,high")
    p.add_argument("--steps", type=int, default=None, help="override every tier's steps (smoke runs)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = p.parse_args(argv)
    args.arch = "tiny" if args.tiny else "full"
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.size = args.size or (64 if args.tiny else 1024)
    return args


def _timed(backend, reqs: list, warmup: int, repeats: int) -> tuple[list, float]:
    """One request: `edit()`; several: one `edit_batch()` call (what the runner does with equal-key jobs)."""

    def once() -> list:
        if len(reqs) == 1:
            return [backend.edit(reqs[0])]
        out = backend.edit_batch(reqs)
        failed = [r for r in out if isinstance(r, EditError)]
        if failed:
            raise failed[0]
        return out

    for _ in range(warmup):
        once()
    start = time.perf_counter()
    results = [r for _ in range(repeats) for r in once()]
    return results, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = arch.start(args.device)
    if info is None:
        return 2
    from backends.diffusion import runtime as rt

    tiers = args.tiers.split(",")
    overrides = {t: {"steps": args.steps} for t in tiers} if args.steps else {}
    backend = arch.make_backend(
        args.arch,
        device=args.device,
        dtype=args.dtype,
        offload=args.offload,
        compile=args.compile,
        channels_last=args.channels_last,
        target_megapixels=args.size**2 / 1024**2,
        tiers=overrides,
    )
    loaded = rt.get_pipeline(backend.settings)
    rows = []
    shapes = [(int(b), 1) for b in args.batches.split(",")] + ([(1, args.jobs)] if args.jobs > 1 else [])
    for tier_name in tiers:
        tier = backend.settings.tiers[tier_name]
        for n, jobs in shapes:
            label = f"{jobs} jobs" if jobs > 1 else n
            reqs = [
                replace(arch.bench_request(args.size, n, tier_name, f"gpu-check-{tier_name}-{n}-{j}"), seed=j)
                for j in range(jobs)
            ]
            row = {
                "card": info["price_card"],
                "tier": tier_name,
                "size": f"{args.size}x{args.size}",
                "batch": label,
                "steps_run": tier.steps_run,
                "dtype": loaded.dtype,
                "date": info["date"],
                "guidance": tier.guidance_scale,
            }
            arch.reset_peak(args.device)
            try:
                results, wall = _timed(backend, reqs, args.warmup, args.repeats)
            except EditError as exc:  # e.g. out of memory at n=4 on a small card: note it, go on unattended
                rows.append({**row, "error": str(exc)})
                sys.stderr.write(f"{tier_name} batch {label}: {exc}\n")
                continue
            images = sum(len(r.images) for r in results)
            seconds = sum(r.usage.gpu_seconds for r in results) / images
            e2e = wall / images  # request in to encoded images out, per image
            rows.append(
                {
                    **row,
                    "seconds_per_image": round(seconds, 4),
                    "e2e_seconds_per_image": round(e2e, 4),
                    "images_per_hour": round(3600 / seconds),
                    "peak_gib": arch.peak_gib(args.device),
                }
            )
    print(arch.header(info))
    print(
        f"backend: SDXLInpaintBackend, {args.arch} architecture with random weights, {loaded.dtype} on "
        f"{loaded.device}; options: {', '.join(loaded.notes) or 'defaults (SDPA attention)'}\n"
    )
    print("\n".join(arch.table(COLUMNS, rows)))
    for tier_name in tiers:
        solo = next((r for r in rows if r["tier"] == tier_name and r["batch"] == 1 and "error" not in r), None)
        grouped = next(
            (r for r in rows if r["tier"] == tier_name and str(r["batch"]).endswith("jobs") and "error" not in r), None
        )
        if solo and grouped:
            print(
                f"- {tier_name}: {grouped['batch']} in one call {grouped['seconds_per_image']} s/image vs one job "
                f"per call {solo['seconds_per_image']} s/image = "
                f"{solo['seconds_per_image'] / grouped['seconds_per_image']:.2f}x (batching pays where > 1: "
                f"max_batch)"
            )
    arch.write_json(
        args.json,
        {"info": info, "args": {k: str(v) for k, v in vars(args).items()}, "options": loaded.notes, "rows": rows},
    )
    rt.clear_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
