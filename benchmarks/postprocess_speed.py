"""What the CPU does around a diffusion call: the paste-back's erosion, the whole paste-back, and encoding (CPU, any
machine, seconds).

    python -m benchmarks.postprocess_speed                  # 1024x1024, feather 8
    python -m benchmarks.postprocess_speed --size 2048 --json post.json
    python -m benchmarks.postprocess_speed --overlap        # + jobs through the local executor, 1 vs 2 host workers

Rows: the feathering's erosion as it was (PIL's 15x15 `MinFilter`, chained) against `canvas.erode` (two separable
1-D passes, identical bytes: tests/test_canvas_feather.py), then `canvas.paste_back` and PNG / JPEG encoding of one
output image, each the median of --repeats runs.

`--overlap`: masked --size x --size edits on the tiny FLUX.2 klein stand-in (a 64x64 working size, so the pipeline
call is short and the paste-back and encoding at full size weigh as they do beside a GPU call) through the local
executor's pool for the backend, with one host worker (each call waits for the previous job's paste-back and
encoding) and with the backend's `host_workers` (the next call runs while the last job is post-processed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from backends import canvas as px


def min_filter_erosion(mask: Image.Image, feather_px: int) -> np.ndarray:
    """The erosion `canvas.feather_alpha` did before: PIL MinFilter of up to 15x15, chained (the reference)."""
    eroded, left = mask, feather_px
    while left > 0:
        step = min(left, 7)
        eroded = eroded.filter(ImageFilter.MinFilter(2 * step + 1))
        left -= step
    return np.asarray(eroded)


def inputs(size: int) -> tuple[Image.Image, Image.Image, Image.Image]:
    """A structured canvas, a 'generated' image and a repaint mask (an ellipse: curved edges)."""
    x = np.linspace(0, 255, size, dtype=np.uint8)[None, :].repeat(size, 0)
    canvas = Image.fromarray(np.stack([x, x.T, (x // 2 + x.T // 2)], axis=-1), "RGB")
    generated = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((size // 5, size // 4, 4 * size // 5, 3 * size // 4), fill=255)
    return canvas, generated, mask


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def overlap(size: int, jobs: int, model_dir: Path | None, torch_threads: int) -> dict[str, float]:
    """Wall seconds per job through the local executor with 1 host worker and with the backend's own number."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)  # the stand-in's "device"; the other cores are the host's, as beside a GPU
    try:
        return _overlap(size, jobs, model_dir)
    finally:
        torch.set_num_threads(threads)


def _overlap(size: int, jobs: int, model_dir: Path | None) -> dict[str, float]:
    import tempfile

    from backends.base import EditRequest
    from backends.images import InputImage
    from backends.registry import create_backend
    from backends.standins.tiny_flux2_klein import build_tiny_flux2_klein
    from pipeline.run.executors import BackendLimits, LocalExecutor

    model = model_dir or build_tiny_flux2_klein(Path(tempfile.mkdtemp(prefix="editroute-klein-")) / "pipeline")
    tiers = {name: {"steps": 2} for name in ("low", "medium", "high")}
    backend = create_backend(
        "flux2-klein",
        "klein",
        {"model": str(model), "device": "cpu", "target_megapixels": 64 * 64 / 1024**2, "tiers": tiers},
    )
    canvas, _, repaint = inputs(size)
    alpha = Image.fromarray(np.where(np.asarray(repaint) > 0, 0, 255).astype(np.uint8), "L")
    mask = Image.new("RGBA", (size, size))
    mask.putalpha(alpha)
    png = {name: px.encode(img, "png") for name, img in (("image", canvas), ("mask", mask))}
    request = EditRequest(
        prompt="a red leather armchair",
        images=(InputImage.from_bytes(png["image"], "in.png"),),
        mask=InputImage.from_bytes(png["mask"], "mask.png", field="mask"),
        seed=1,
    ).materialized()
    backend.edit(request)  # load and warm up
    out = {}
    for workers in sorted({1, backend.host_workers}):
        executor = LocalExecutor({"klein": backend}, {"klein": BackendLimits(concurrency=workers)})
        start = time.perf_counter()
        futures = [executor.submit("klein", request) for _ in range(jobs)]
        results = [f.result() for f in futures]
        out[f"{workers} host worker(s)"] = (time.perf_counter() - start) / jobs
        executor.close()
        gpu = statistics.mean(r.usage.gpu_seconds for r in results)
        post = statistics.mean(r.timings["postprocess_s"] for r in results)
        out[f"{workers} host worker(s): pipeline call"] = gpu
        out[f"{workers} host worker(s): paste-back + encode"] = post
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.postprocess_speed", description=__doc__)
    p.add_argument("--size", type=int, default=1024, help="square edge in pixels (default 1024)")
    p.add_argument("--feather", type=int, default=8, help="feather_px (the backends' default: 8)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--overlap", action="store_true", help="also time jobs through the executor, 1 vs 2 host workers")
    p.add_argument("--jobs", type=int, default=12, help="jobs per --overlap row")
    p.add_argument("--model", type=Path, default=None, help="tiny klein directory for --overlap (default: build one)")
    p.add_argument(
        "--torch-threads", type=int, default=1, help="cores the stand-in pipeline may use in --overlap (default 1)"
    )
    args = p.parse_args(argv)
    canvas, generated, mask = inputs(args.size)
    hard = np.asarray(mask)
    assert np.array_equal(min_filter_erosion(mask, args.feather), px.erode(hard, args.feather))
    old = median_ms(lambda: min_filter_erosion(mask, args.feather), args.repeats)
    new = median_ms(lambda: px.erode(hard, args.feather), args.repeats)
    pasted = px.paste_back(canvas, generated, mask, args.feather)
    rows = {
        "erosion, PIL MinFilter (before)": old,
        "erosion, separable (canvas.erode)": new,
        "paste_back (erosion + blur + blend)": median_ms(
            lambda: px.paste_back(canvas, generated, mask, args.feather), args.repeats
        ),
        "encode png": median_ms(lambda: px.encode(pasted, "png"), args.repeats),
        "encode jpeg q90": median_ms(lambda: px.encode(pasted, "jpeg", 90), args.repeats),
    }
    when = time.strftime("%Y-%m-%d")
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}; {when}")
    print(f"{args.size}x{args.size}, feather {args.feather} px, median of {args.repeats}\n")
    print("| step | ms |\n|---|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms} |")
    print(f"\nerosion speed-up: {old / new:.0f}x (identical bytes)")
    report: dict = {"size": args.size, "date": when, "ms": rows}
    if args.overlap:
        report["overlap_s_per_job"] = times = overlap(args.size, args.jobs, args.model, args.torch_threads)
        print(
            f"\n{args.jobs} masked {args.size}x{args.size} edits, tiny FLUX.2 klein (64x64 working size, "
            f"{args.torch_threads} torch thread(s)):\n"
        )
        print("| workers | s per job (wall) |\n|---|---:|")
        for name, seconds in times.items():
            print(f"| {name} | {seconds:.3f} |")
        walls = [v for k, v in times.items() if k.endswith("worker(s)")]
        if len(walls) == 2:
            print(f"\nwall per job: {walls[0]:.3f} s -> {walls[1]:.3f} s ({walls[0] / walls[1]:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
