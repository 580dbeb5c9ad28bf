"""Pixel plumbing shared by every backend that composites: pure Pillow + numpy, no torch.

The flow for one request:
  1. `repaint_mask()`: OpenAI's mask (alpha 0 = edit) -> diffusers' (white = repaint), at the input's size.
  2. `plan_geometry()`: the output size (`output_size()`: the SIZE RULE below) and the working size the model runs
     at (the output's aspect ratio, ~`target_megapixels` x 1024^2 pixels, multiples of the model's grid: 8 for
     SDXL, 16 for FLUX.2 klein, 32 for Qwen-Image-Edit).
  3. `to_canvas()`: the input placed on the output canvas. A different aspect ratio is letterboxed, and the
     padding joins the repaint mask, so the model outpaints it rather than leaving bars.
  4. `to_working()`: canvas and mask resized to the working size (the mask never shrinks, so it covers the edit).
  5. `paste_back()`: the generated image resized to the output size and composited onto the canvas through a
     mask feathered INWARD: every pixel outside the repaint mask keeps its original value exactly (the
     pipeline's VAE round trip would otherwise shift colours everywhere).
  6. `encode()`: png / jpeg / webp with `output_compression` as the jpeg/webp quality.

THE SIZE RULE, for every backend (self-hosted and hosted), so a job's output size never depends on where it was
routed: `size: WxH` -> exactly W x H. `size: auto` -> exactly the FIRST input image's own width x height (the image
being edited; a mask, when given, has that size too). A model that generates at other sizes (a diffusion model's
grid, an API's fixed sizes) generates at its nearest size of the same aspect ratio and the result is resized
(LANCZOS) to that size; with a mask it is then composited onto the original, so pixels outside the mask are the
input's own. Hosted backends still BILL at the size they asked the provider for (e.g. gpt-image-1's 1024x1024,
1536x1024 or 1024x1536, chosen by the input's aspect ratio: `backends.pricing.output_size_for`).

A mask with nothing to edit (no fully transparent pixel) is refused before any GPU time or spend
(`edit_area()` is 0); an all-transparent mask is a whole-image edit, which every backend takes except SDXL
inpainting without `maskless: img2img` (it would repaint the picture from noise).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

MEGAPIXEL = 1024 * 1024  # "1.0 megapixels" here means SDXL's training area, 1024x1024
SNAP = 8  # working sizes are multiples of the VAE's downscale factor
PAD_FILL = (127, 127, 127)  # letterbox fill under the repaint mask; the model repaints it


@dataclass(frozen=True)
class Geometry:
    out_size: tuple[int, int]  # what the caller gets back
    work_size: tuple[int, int]  # what the pipeline runs at
    content_box: tuple[int, int, int, int]  # where the input sits on the output canvas (l, t, r, b)

    @property
    def padded(self) -> bool:
        return self.content_box != (0, 0, *self.out_size)


def output_size(size: str, first_input: tuple[int, int]) -> tuple[int, int]:
    """The size the caller gets back: THE SIZE RULE (module doc): WxH as asked; `auto` = the first input's size."""
    return parse_size(size) or first_input


def parse_size(size: str) -> tuple[int, int] | None:
    if size == "auto":
        return None
    w, _, h = size.partition("x")
    return int(w), int(h)


def snap(value: float, multiple: int = SNAP) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def working_size(width: int, height: int, target_megapixels: float = 1.0, grid: int = SNAP) -> tuple[int, int]:
    """Keep `width:height`, scale to about `target_megapixels` x 1024^2 pixels, snap each side to a multiple of
    `grid` (the model's native size grid)."""
    scale = math.sqrt(target_megapixels * MEGAPIXEL / (width * height))
    return snap(width * scale, grid), snap(height * scale, grid)


def plan_geometry(size: str, in_w: int, in_h: int, target_megapixels: float = 1.0, grid: int = SNAP) -> Geometry:
    out_w, out_h = output_size(size, (in_w, in_h))
    scale = min(out_w / in_w, out_h / in_h)
    cw, ch = max(1, round(in_w * scale)), max(1, round(in_h * scale))
    left, top = (out_w - cw) // 2, (out_h - ch) // 2
    return Geometry(
        out_size=(out_w, out_h),
        work_size=working_size(out_w, out_h, target_megapixels, grid),
        content_box=(left, top, left + cw, top + ch),
    )


def repaint_mask(openai_mask: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    """White (255) where the model may repaint, black (0) where it must keep the pixels.

    OpenAI: fully transparent pixels (alpha 0) mark the edit. No mask at all means repaint everything (img2img)."""
    if openai_mask is None:
        return Image.new("L", size, 255)
    rgba = openai_mask.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    return Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), "L")


def to_canvas(image: Image.Image, mask: Image.Image, geom: Geometry) -> tuple[Image.Image, Image.Image]:
    """The input (RGB) and its repaint mask placed on the output canvas; letterbox padding is marked for repaint."""
    image = image.convert("RGB")
    if not geom.padded and image.size == geom.out_size:
        return image, mask
    left, top, right, bottom = geom.content_box
    box = (right - left, bottom - top)
    canvas = Image.new("RGB", geom.out_size, PAD_FILL)
    canvas.paste(image.resize(box, Image.Resampling.LANCZOS), (left, top))
    canvas_mask = Image.new("L", geom.out_size, 255)
    canvas_mask.paste(mask.resize(box, Image.Resampling.NEAREST), (left, top))
    return canvas, canvas_mask


def to_working(canvas: Image.Image, mask: Image.Image, geom: Geometry) -> tuple[Image.Image, Image.Image]:
    """Canvas and mask at the working size. Any mask pixel touched by the edit stays white after resizing."""
    if canvas.size == geom.work_size:
        return canvas, mask
    image = canvas.resize(geom.work_size, Image.Resampling.LANCZOS)
    small = np.asarray(mask.resize(geom.work_size, Image.Resampling.BILINEAR))
    return image, Image.fromarray(np.where(small > 0, 255, 0).astype(np.uint8), "L")


def edit_area(repaint: Image.Image) -> float:
    """Share of the picture a repaint mask (L, white = repaint) lets the model change: 0.0 = nothing to edit."""
    hist = repaint.histogram()
    return sum(hist[1:]) / max(1, repaint.width * repaint.height)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Minimum over the (2r+1) x (2r+1) square around each pixel, the square clipped at the image's edges: what
    PIL's `ImageFilter.MinFilter(2r+1)` gives (it pads by repeating the edge pixels), byte for byte, as two 1-D
    passes of O(log r) array minimums each (~100x faster at 1024^2 than the 2-D rank filter)."""
    out = mask
    for axis in (0, 1):
        out = _sliding_min(out, radius, axis)
    return out


def _sliding_min(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Minimum over a window of 2r+1 along `axis`, clipped at the ends (edge padding leaves the minimum as is)."""
    if radius <= 0:
        return a
    n, width = a.shape[axis], 2 * radius + 1
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius, radius)
    m, span = np.pad(a, pad, mode="edge"), 1  # m[i] = min of `span` values from i on

    def part(x: np.ndarray, start: int, length: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + length)
        return x[tuple(index)]

    while 2 * span <= width:  # doubling: windows of 2, 4, 8, ...
        length = m.shape[axis] - span
        m = np.minimum(part(m, 0, length), part(m, span, length))
        span *= 2
    # a window of `width` is the union of the `span`-windows starting at i and at i + width - span
    return np.minimum(part(m, 0, n), part(m, width - span, n))


def feather_alpha(mask: Image.Image, feather_px: int) -> np.ndarray:
    """0..255 blend weights: 0 everywhere outside the mask, ramping up to 255 inside over ~`feather_px` pixels."""
    hard = np.asarray(mask, dtype=np.uint8)
    if feather_px <= 0:
        return hard.copy()
    # erode by feather_px first, so the ramp ends at the mask's edge instead of straddling it
    eroded = Image.fromarray(erode(hard, feather_px), "L")
    soft = np.asarray(eroded.filter(ImageFilter.GaussianBlur(feather_px / 2)), dtype=np.uint8)
    return np.minimum(hard, soft)


def paste_back(canvas: Image.Image, generated: Image.Image, mask: Image.Image, feather_px: int = 4) -> Image.Image:
    """Composite `generated` onto `canvas` (both RGB; `generated` any size) through the feathered `mask`.

    Integer blending: where the weight is 0 the result is the canvas pixel exactly."""
    gen = generated.convert("RGB")
    if gen.size != canvas.size:
        gen = gen.resize(canvas.size, Image.Resampling.LANCZOS)
    alpha = feather_alpha(mask, feather_px)
    out = np.array(canvas.convert("RGB"), dtype=np.uint8)  # a copy: outside the mask's box it is the result
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size:  # blend only the mask's bounding box, in 16 bits (255 x 255 + 127 fits)
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        a = alpha[top:bottom, left:right, None].astype(np.uint16)
        base = out[top:bottom, left:right].astype(np.uint16)
        new = np.asarray(gen)[top:bottom, left:right].astype(np.uint16)
        out[top:bottom, left:right] = ((base * (255 - a) + new * a + 127) // 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def encode(image: Image.Image, fmt: str, compression: int | None = None) -> bytes:
    """Encode for the caller. `compression` (0-100, jpeg/webp) is the encoder quality, 100 = best, as the API's
    `output_compression` defaults to 100; png is lossless and ignores it."""
    buf = io.BytesIO()
    quality = 100 if compression is None else compression
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality, lossless=False)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()
