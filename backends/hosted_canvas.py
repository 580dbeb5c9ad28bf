"""Pixel plumbing shared by hosted backends whose output geometry or masking differs from the request.

Gemini has no mask and answers at its own aspect-ratio sizes; Firefly fills at a fixed list of sizes and may
answer in JPEG; OpenAI answers `size: auto` at one of its three aspect buckets. All are brought back to OpenAI
semantics and to THE SIZE RULE (`backends.canvas`: `auto` = exactly the first input's width x height) the same way:

  1. `prepare()`: the output size (`backends.canvas.output_size`) and, with a mask, the canvas (the input placed
     on the output size, letterboxed if the ratio differs, the padding joining the edit region) and its repaint
     mask (white = edit, converted from OpenAI's alpha-0 convention).
  2. `finish()`: the provider's image cover-fitted to the output size (scaled to cover, centre-cropped: never
     stretched), composited onto the canvas through the inward-feathered mask when there is one (every pixel
     outside the mask keeps its original value exactly), then encoded as asked. What was done is returned as
     `Finish.notes`, for the result's extras: nothing here happens silently.
  `to_input_size()` does both for a provider that edits natively but answered `size: auto` at its own size.

The compositing itself is `backends.canvas.paste_back` (integer blending, exact outside the mask).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from backends.base import EditRequest
from backends.canvas import encode, output_size, paste_back, plan_geometry, repaint_mask, to_canvas
from backends.errors import BackendUnavailable

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "MPO": "jpeg"}


@dataclass(frozen=True)
class Plan:
    out_size: tuple[int, int] | None  # None: keep whatever size the provider answers with (expand's own size)
    canvas: Image.Image | None = None  # RGB, out_size; only with a mask
    repaint: Image.Image | None = None  # L, out_size, 255 = edit; only with a mask


@dataclass(frozen=True)
class Finish:
    data: bytes
    width: int
    height: int
    notes: dict[str, Any] = field(default_factory=dict)


def parse_wxh(size: str) -> tuple[int, int] | None:
    if size == "auto":
        return None
    w, _, h = size.partition("x")
    return int(w), int(h)


def prepare(request: EditRequest) -> Plan:
    """Output size and, with a mask, the canvas to composite onto (see the module doc)."""
    if request.mask is None:
        return Plan(out_size=output_size(request.size, request.images[0].size))
    first = request.images[0].open()
    try:
        geom = plan_geometry(request.size, first.width, first.height)
        with request.mask.open() as mask_img:
            repaint = repaint_mask(mask_img, first.size)
        canvas, canvas_mask = to_canvas(first, repaint, geom)
    finally:
        first.close()
    return Plan(out_size=geom.out_size, canvas=canvas, repaint=canvas_mask)


def fit_cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover `size` and centre-crop the overflow (no stretching); unchanged if already that size."""
    if image.size == size:
        return image
    scale = max(size[0] / image.width, size[1] / image.height)
    w, h = max(size[0], round(image.width * scale)), max(size[1], round(image.height * scale))
    resized = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - size[0]) // 2, (h - size[1]) // 2
    return resized.crop((left, top, left + size[0], top + size[1]))


def sniff(data: bytes) -> str | None:
    """png | jpeg | webp from the bytes (providers do not always say, or say right)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _FORMATS.get(img.format or "")
    except Exception:  # noqa: BLE001 - not an image at all
        return None


def finish(
    data: bytes,
    plan: Plan,
    *,
    output_format: str,
    compression: int | None,
    feather_px: int,
    crop: tuple[int, int, int, int] | None = None,
) -> Finish:
    """The provider's image bytes -> the caller's image, as `plan` says (see the module doc). `crop` first cuts
    the part of the provider's picture that stands for the canvas (e.g. out of a letterboxed upload)."""
    try:
        generated = Image.open(io.BytesIO(data))
        generated.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a broken answer
        raise BackendUnavailable(
            f"the provider sent an image that does not decode ({exc.__class__.__name__})"
        ) from None
    provider_fmt = _FORMATS.get(generated.format or "", (generated.format or "unknown").lower())
    notes: dict[str, Any] = {"provider_size": f"{generated.width}x{generated.height}", "provider_format": provider_fmt}
    if crop is not None and crop != (0, 0, generated.width, generated.height):
        generated = generated.crop(crop)
        notes["cropped"] = f"{crop[2] - crop[0]}x{crop[3] - crop[1]} at ({crop[0]}, {crop[1]}) (letterbox removed)"
    out_size = plan.out_size or generated.size
    if generated.size != out_size:
        notes["resized"] = f"{generated.width}x{generated.height} -> {out_size[0]}x{out_size[1]} (cover, centre crop)"
    untouched = "cropped" not in notes and generated.size == out_size and plan.canvas is None
    if untouched and provider_fmt == output_format and compression is None:
        return Finish(data, out_size[0], out_size[1], notes)  # untouched: provenance metadata (C2PA) survives
    keep_alpha = plan.canvas is None and output_format != "jpeg" and _has_alpha(generated)
    fitted = fit_cover(generated.convert("RGBA" if keep_alpha else "RGB"), out_size)
    if plan.canvas is not None and plan.repaint is not None:
        fitted = paste_back(plan.canvas, fitted, plan.repaint, feather_px)
        notes["pasted_back"] = True
    return Finish(encode(fitted, output_format, compression), out_size[0], out_size[1], notes)


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)


def to_input_size(
    request: EditRequest, images: tuple[bytes, ...], *, output_format: str, compression: int | None, feather_px: int = 4
) -> tuple[tuple[bytes, ...], tuple[int, int], dict[str, Any]] | None:
    """THE SIZE RULE for a provider that edits natively but answered `size: auto` at a size of its own (OpenAI's
    aspect buckets): every image cover-fitted to the first input's size and, with a mask, composited onto the
    input so pixels outside the mask are its own. None when there is nothing to do (an explicit size, answers
    already at the input's size) or nothing can be done here: a remote input (its size is unknown here) or a GIF.
    Returns (images, size, notes for the result's extras)."""
    first = request.images[0]
    if not may_refit(request, output_format):
        return None
    sizes = [_size_of(data) for data in images]
    if all(size == first.size for size in sizes):
        return None
    transparent = request.background == "transparent"
    plan = prepare(request) if not transparent else Plan(out_size=first.size)
    done = [
        finish(d, plan, output_format=output_format, compression=compression, feather_px=feather_px) for d in images
    ]
    notes = dict(done[0].notes)  # "resized": "1536x1024 -> 160x128 (cover, centre crop)"
    if transparent and request.mask is not None:
        notes["pasted_back"] = False  # compositing would flatten the transparency the job asked for
    return tuple(d.data for d in done), first.size, notes


def may_refit(request: EditRequest, output_format: str) -> bool:
    """Whether `to_input_size` may change a provider's answer (known before its images are decoded)."""
    if request.size != "auto" or output_format == "gif":
        return False
    return not (request.images[0].is_remote or (request.mask is not None and request.mask.is_remote))


def _size_of(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - finish() raises the proper error for an image that does not decode
        return None
