"""Request checks that run before any money or GPU time is spent.

`request_problems()` applies the OpenAI edit API's own limits, which every backend shares (reference:
https://developers.openai.com/api/reference/resources/images/methods/edit); `capability_problems()` adds what
one backend cannot honour. Both return every problem at once as
`InvalidRequest`s naming the field, the value and the limit; `check_request()` raises the first.
"""

from __future__ import annotations

import re

from backends.base import (
    BACKGROUNDS,
    INPUT_FIDELITIES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_N,
    MAX_PROMPT_CHARS,
    OUTPUT_FORMATS,
    QUALITIES,
    SIZES,
    Capabilities,
    EditRequest,
)
from backends.errors import InvalidRequest

ACCEPTED_IMAGE_FORMATS = ("png", "webp", "jpeg")
_WXH = re.compile(r"^(\d+)x(\d+)$")


def _problem(field: str, value, limit: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}={value!r}: {message} (limit: {limit})", field=field, value=value, limit=limit)


def _image_problems(request: EditRequest, max_bytes: int) -> list[InvalidRequest]:
    out = []
    if not request.images:
        out.append(_problem("image", 0, "1 to 16 images", "at least one input image is required"))
    if len(request.images) > MAX_IMAGES:
        out.append(_problem("image", len(request.images), f"at most {MAX_IMAGES} images", "too many input images"))
    for i, img in enumerate(request.images):
        field = "image" if len(request.images) == 1 else f"image[{i}]"
        if img.format not in ACCEPTED_IMAGE_FORMATS:
            out.append(_problem(field, img.name, "png, webp or jpeg", f"unsupported image format {img.format!r}"))
        if img.frames > 1:
            out.append(_problem(field, img.name, "a still image", f"animated image with {img.frames} frames"))
        if img.nbytes > max_bytes:
            out.append(_problem(field, img.name, f"< {max_bytes} bytes", f"image is {img.nbytes} bytes"))
    mask = request.mask
    if mask is not None:
        if mask.format != "png":
            out.append(_problem("mask", mask.name, "a PNG with an alpha channel", f"mask is {mask.format!r}"))
        elif not mask.has_alpha:
            out.append(
                _problem(
                    "mask",
                    mask.name,
                    "a PNG with an alpha channel",
                    "mask has no alpha channel (transparent pixels mark the area to edit)",
                )
            )
        if request.images and mask.size != request.images[0].size:
            first = request.images[0]
            out.append(
                _problem(
                    "mask",
                    f"{mask.width}x{mask.height}",
                    f"{first.width}x{first.height}",
                    "mask must have the same dimensions as the first image",
                )
            )
        if mask.nbytes > max_bytes:
            out.append(_problem("mask", mask.name, f"< {max_bytes} bytes", f"mask is {mask.nbytes} bytes"))
    return out


def _size_problem(size: str) -> InvalidRequest | None:
    if size in SIZES:
        return None
    m = _WXH.match(size)
    if m is None:
        return _problem("size", size, " | ".join(SIZES) + " or WxH", "not a size")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16 or max(w, h) > 3840 or max(w, h) > 3 * min(w, h) or w * h < 655_360:
        return _problem(
            "size",
            size,
            "WxH: multiples of 16, edge <= 3840, ratio <= 3:1, >= 655360 pixels",
            "custom size out of range",
        )
    return None


def request_problems(request: EditRequest) -> list[InvalidRequest]:
    """Every way `request` breaks the edit API's shared limits."""
    out = _image_problems(request, MAX_IMAGE_BYTES)
    prompt = request.prompt
    if not isinstance(prompt, str) or not prompt.strip():
        out.append(_problem("prompt", prompt, "1 to 32000 characters", "prompt is empty"))
    elif len(prompt) > MAX_PROMPT_CHARS:
        out.append(
            _problem("prompt", f"<{len(prompt)} characters>", f"{MAX_PROMPT_CHARS} characters", "prompt is too long")
        )
    if not isinstance(request.n, int) or isinstance(request.n, bool) or not 1 <= request.n <= MAX_N:
        out.append(_problem("n", request.n, f"1 to {MAX_N}", "n out of range"))
    if (p := _size_problem(request.size)) is not None:
        out.append(p)
    if request.quality not in QUALITIES:
        out.append(_problem("quality", request.quality, " | ".join(QUALITIES), "unknown quality"))
    if request.output_format not in OUTPUT_FORMATS:
        out.append(
            _problem("output_format", request.output_format, " | ".join(OUTPUT_FORMATS), "unknown output format")
        )
    comp = request.output_compression
    if comp is not None:
        if not isinstance(comp, int) or isinstance(comp, bool) or not 0 <= comp <= 100:
            out.append(_problem("output_compression", comp, "0 to 100", "compression out of range"))
        elif request.output_format == "png" and comp != 100:
            out.append(
                _problem(
                    "output_compression", comp, "jpeg or webp output only", "compression applies only to jpeg and webp"
                )
            )
    if request.background not in BACKGROUNDS:
        out.append(_problem("background", request.background, " | ".join(BACKGROUNDS), "unknown background"))
    elif request.background == "transparent" and request.output_format not in ("png", "webp"):
        out.append(
            _problem(
                "background",
                "transparent",
                "output_format png or webp",
                f"a transparent background cannot be saved as {request.output_format}",
            )
        )
    if request.input_fidelity is not None and request.input_fidelity not in INPUT_FIDELITIES:
        out.append(
            _problem("input_fidelity", request.input_fidelity, " | ".join(INPUT_FIDELITIES), "unknown input fidelity")
        )
    if request.seed is not None and (not isinstance(request.seed, int) or not 0 <= request.seed < 2**63):
        out.append(_problem("seed", request.seed, "0 to 2**63-1", "seed out of range"))
    return out


def capability_problems(request: EditRequest, caps: Capabilities) -> list[InvalidRequest]:
    """What this backend cannot honour in an otherwise valid request."""
    out = []
    if len(request.images) > caps.max_images:
        out.append(
            _problem(
                "image",
                len(request.images),
                f"at most {caps.max_images} image(s) on this backend",
                "too many input images for this backend",
            )
        )
    if request.mask is None and not caps.mask_optional:
        out.append(
            _problem(
                "mask", None, "a mask is required on this backend", "no mask given and this backend cannot infer one"
            )
        )
    if request.size not in caps.sizes and not (caps.arbitrary_sizes and _WXH.match(request.size)):
        out.append(_problem("size", request.size, " | ".join(sorted(caps.sizes)), "size not offered here"))
    if request.quality not in caps.qualities:
        out.append(_problem("quality", request.quality, " | ".join(sorted(caps.qualities)), "quality not offered here"))
    if request.n > caps.max_n:
        out.append(_problem("n", request.n, f"at most {caps.max_n} on this backend", "n too large here"))
    if request.output_format not in caps.formats:
        out.append(
            _problem(
                "output_format",
                request.output_format,
                " | ".join(sorted(caps.formats)),
                "output format not offered here",
            )
        )
    if request.background == "transparent" and not caps.transparent_background:
        out.append(
            _problem(
                "background",
                "transparent",
                "opaque or auto on this backend",
                "this backend cannot make transparent backgrounds",
            )
        )
    if request.input_fidelity is not None and not caps.input_fidelity:
        out.append(
            _problem(
                "input_fidelity",
                request.input_fidelity,
                "omit it on this backend",
                "this model does not take input_fidelity",
            )
        )
    too_big = [img for img in request.images if img.nbytes > caps.max_image_bytes]
    if too_big:
        out.append(
            _problem(
                "image",
                too_big[0].name,
                f"< {caps.max_image_bytes} bytes on this backend",
                f"image is {too_big[0].nbytes} bytes",
            )
        )
    return out


def check_request(request: EditRequest, caps: Capabilities | None = None, *, backend: str | None = None) -> None:
    """Raise the first problem (all of them are in its message), naming the job and backend."""
    problems = request_problems(request)
    if caps is not None and not problems:
        problems = capability_problems(request, caps)
    if problems:
        first = problems[0]
        if len(problems) > 1:
            first.message = "; ".join(p.message for p in problems)
            first.args = (first.message,)
        raise first.with_context(job_id=request.job_id, backend=backend)
