"""What the CPU does around a diffusion call: the paste-back's erosion, the whole paste-back, and encoding (CPU, any
machine, seconds).

    python -m benchmarks.postprocess_speed                  # 1024x1024, feather 8
    python -m benchmarks.postprocess_speed --size 2048 --json post.json

Rows: the feathering's erosion as it was (PIL's 15x15 `MinFilter`, chained) against `canvas.erode` (two separable
1-D passes, identical bytes: tests/test_canvas_feather.py), then `canvas.paste_back` and PNG / JPEG encoding of one
output image, each the median of --repeats runs.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.postprocess_speed", description=__doc__)
    p.add_argument("--size", type=int, default=1024, help="square edge in pixels (default 1024)")
    p.add_argument("--feather", type=int, default=8, help="feather_px (the backends' default: 8)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
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
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "date": when, "ms": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
