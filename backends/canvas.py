"""Pixel plumbing shared by every backend that composites: pure Pillow + numpy, no torch.

The flow for one request:
  1. `repaint_mask()`: OpenAI's mask (alpha 0 = edit) -> diffusers' (white = repaint), at the input's size.
  2. `plan_geometry()`: the output size (`auto`: the input's own size; else the requested size) and the working
     size the model runs at (the output's aspect ratio, ~`target_megapixels` x 1024^2 pixels, multiples of 8).
  3. `to_canvas()`: the input placed on the output canvas. A different aspect ratio is letterboxed, and the
     padding joins the repaint mask, so the model outpaints it rather than leaving bars.
  4. `to_working()`: canvas and mask resized to the working size (the mask never shrinks, so it covers the edit).
  5. `paste_back()`: the generated image resized to the output size and composited onto the canvas through a
     mask feathered INWARD: every pixel outside the repaint mask keeps its original value exactly (the
     pipeline's VAE round trip would otherwise shift colours everywhere).
  6. `encode()`: png / jpeg / webp with `output_compression` as the jpeg/webp quality.
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


def parse_size(size: str) -> tuple[int, int] | None:
    if size == "auto":
        return None
    w, _, h = size.partition("x")
    return int(w), int(h)


def snap(value: float, multiple: int = SNAP) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def working_size(width: int, height: int, target_megapixels: float = 1.0) -> tuple[int, int]:
    """Keep `width:height`, scale to about `target_megapixels` x 1024^2 pixels, snap each side to a multiple of 8."""
    scale = math.sqrt(target_megapixels * MEGAPIXEL / (width * height))
    return snap(width * scale), snap(height * scale)


def plan_geometry(size: str, in_w: int, in_h: int, target_megapixels: float = 1.0) -> Geometry:
    requested = parse_size(size)
    out_w, out_h = requested or (in_w, in_h)
    scale = min(out_w / in_w, out_h / in_h)
    cw, ch = max(1, round(in_w * scale)), max(1, round(in_h * scale))
    left, top = (out_w - cw) // 2, (out_h - ch) // 2
    return Geometry(
        out_size=(out_w, out_h),
        work_size=working_size(out_w, out_h, target_megapixels),
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


def feather_alpha(mask: Image.Image, feather_px: int) -> np.ndarray:
    """0..255 blend weights: 0 everywhere outside the mask, ramping up to 255 inside over ~`feather_px` pixels."""
    hard = np.asarray(mask, dtype=np.uint8)
    if feather_px <= 0:
        return hard.copy()
    eroded, left = mask, feather_px
    while left > 0:  # erode by feather_px, so the ramp ends at the mask's edge instead of straddling it
        step = min(left, 7)
        eroded = eroded.filter(ImageFilter.MinFilter(2 * step + 1))
        left -= step
    soft = np.asarray(eroded.filter(ImageFilter.GaussianBlur(feather_px / 2)), dtype=np.uint8)
    return np.minimum(hard, soft)


def paste_back(canvas: Image.Image, generated: Image.Image, mask: Image.Image, feather_px: int = 4) -> Image.Image:
    """Composite `generated` onto `canvas` (both RGB; `generated` any size) through the feathered `mask`.

    Integer blending: where the weight is 0 the result is the canvas pixel exactly."""
    gen = generated.convert("RGB")
    if gen.size != canvas.size:
        gen = gen.resize(canvas.size, Image.Resampling.LANCZOS)
    a = feather_alpha(mask, feather_px).astype(np.uint32)[..., None]
    base = np.asarray(canvas, dtype=np.uint32)
    top = np.asarray(gen, dtype=np.uint32)
    out = (base * (255 - a) + top * a + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


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
