"""Request checks that run before any money or GPU time is spent.

`request_problems()` applies the OpenAI edit API's own limits (https://developers.openai.com/api/reference/
resources/images/methods/edit), which every backend shares; `capability_problems()` adds what one backend cannot
honour (the same `Capabilities` the router filters on). Both return every problem at once as `InvalidRequest`s
naming the field, the value and the limit; `check_request()` raises the first.

Checks that need pixels (format, size, alpha, mask and markup dimensions) are skipped for remote references
(an image given as a file id or URL: the provider fetches it); `skipped_checks()` lists what was skipped.
"""

from __future__ import annotations

import re

from backends.base import (
    BACKGROUNDS,
    COMPLEXITIES,
    DEFAULT_SIZE_RULE,
    INPUT_FIDELITIES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_N,
    MAX_PROMPT_CHARS,
    MAX_SAFETY_IDENTIFIER_CHARS,
    MODERATIONS,
    OUTPUT_FORMATS,
    QUALITIES,
    SIZES,
    Capabilities,
    EditRequest,
)
from backends.errors import InvalidRequest
from backends.images import InputImage

ACCEPTED_IMAGE_FORMATS = ("png", "webp", "jpeg")
_WXH = re.compile(r"^(\d+)x(\d+)$")


def _problem(field: str, value, limit: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}={value!r}: {message} (limit: {limit})", field=field, value=value, limit=limit)


def _png_layer_problems(field: str, layer: InputImage, first: InputImage | None, what: str) -> list[InvalidRequest]:
    """A mask or markup: a PNG with an alpha channel, the size of the first image, within the byte limit."""
    out = []
    if layer.is_remote:
        return out
    if layer.format != "png":
        out.append(_problem(field, layer.name, "a PNG with an alpha channel", f"{field} is {layer.format!r}"))
    elif not layer.has_alpha:
        out.append(_problem(field, layer.name, "a PNG with an alpha channel", f"{field} has no alpha channel ({what})"))
    if first is not None and not first.is_remote and layer.size != first.size:
        out.append(
            _problem(
                field,
                f"{layer.width}x{layer.height}",
                f"{first.width}x{first.height}",
                f"{field} must have the same dimensions as the first image",
            )
        )
    if layer.nbytes > MAX_IMAGE_BYTES:
        out.append(_problem(field, layer.name, f"< {MAX_IMAGE_BYTES} bytes", f"{field} is {layer.nbytes} bytes"))
    return out


def _image_problems(request: EditRequest, max_bytes: int) -> list[InvalidRequest]:
    out = []
    if not request.images:
        out.append(_problem("image", 0, "1 to 16 images", "at least one input image is required"))
    if len(request.images) > MAX_IMAGES:
        out.append(_problem("image", len(request.images), f"at most {MAX_IMAGES} images", "too many input images"))
    for i, img in enumerate(request.images):
        field = "image" if len(request.images) == 1 else f"image[{i}]"
        if img.is_remote:
            continue
        if img.format not in ACCEPTED_IMAGE_FORMATS:
            out.append(_problem(field, img.name, "png, webp or jpeg", f"unsupported image format {img.format!r}"))
        if img.frames > 1:
            out.append(_problem(field, img.name, "a still image", f"animated image with {img.frames} frames"))
        if img.nbytes > max_bytes:
            out.append(_problem(field, img.name, f"< {max_bytes} bytes", f"image is {img.nbytes} bytes"))
    first = request.images[0] if request.images else None
    if request.mask is not None:
        out += _png_layer_problems("mask", request.mask, first, "transparent pixels mark the area to edit")
    if request.markup is not None:
        if request.mask is not None:
            out.append(
                _problem("markup", request.markup.name, "a mask or a markup layer, not both", "markup with a mask")
            )
        out += _png_layer_problems("markup", request.markup, first, "annotations drawn over transparent pixels")
    return out


def _size_problem(size: str) -> InvalidRequest | None:
    """The widest rule any model has (fixed sizes, or OpenAI's WxH rule); a backend's own rule is stricter."""
    if size in SIZES:
        return None
    m = _WXH.match(size)
    if m is None:
        return _problem("size", size, " | ".join(SIZES) + " or WxH", "not a size")
    why = DEFAULT_SIZE_RULE.problem(int(m.group(1)), int(m.group(2)))
    if why is not None:
        return _problem("size", size, DEFAULT_SIZE_RULE.describe(), f"custom size out of range: {why}")
    return None


def _int_ok(value, lo: int, hi: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)


def _gif_problems(request: EditRequest) -> list[InvalidRequest]:
    """GIF output's own rules: frame fields only with gif; no mask, compression or transparency."""
    out = []
    gif = request.output_format == "gif"
    for name in ("frame_count", "frame_duration_ms"):
        value = getattr(request, name)
        if value is not None and not gif:
            out.append(_problem(name, value, "output_format gif", f"{name} applies only to gif output"))
    if request.frame_count is not None and not _int_ok(request.frame_count, 2, 16):
        out.append(_problem("frame_count", request.frame_count, "2 to 16", "frame count out of range"))
    if request.frame_duration_ms is not None and not _int_ok(request.frame_duration_ms, 20, 655_350):
        out.append(
            _problem("frame_duration_ms", request.frame_duration_ms, "20 to 655350", "frame duration out of range")
        )
    if gif:
        if request.mask is not None:
            out.append(_problem("mask", request.mask.name, "no mask with gif output", "GIF output takes no mask"))
        if request.output_compression is not None:
            out.append(
                _problem(
                    "output_compression",
                    request.output_compression,
                    "omit it with gif output",
                    "GIF output takes no custom compression",
                )
            )
    return out


def _stream_problems(request: EditRequest) -> list[InvalidRequest]:
    """Streamed edits: 0 to 3 partial images; GIF and SVG output cannot stream (OpenAI's rule)."""
    out = []
    partial = request.partial_images
    if partial is None:
        return out
    if not _int_ok(partial, 0, 3):
        out.append(_problem("partial_images", partial, "0 to 3", "partial image count out of range"))
    if request.output_format == "gif":
        out.append(_problem("stream", True, "not with gif output", "GIF output cannot be streamed"))
    return out


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
    if not _int_ok(request.n, 1, MAX_N):
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
        if not _int_ok(comp, 0, 100):
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
    if request.complexity is not None and request.complexity not in COMPLEXITIES:
        out.append(_problem("complexity", request.complexity, " | ".join(COMPLEXITIES), "unknown complexity"))
    if request.moderation is not None and request.moderation not in MODERATIONS:
        out.append(_problem("moderation", request.moderation, " | ".join(MODERATIONS), "unknown moderation level"))
    sid = request.safety_identifier
    if sid is not None and (not isinstance(sid, str) or not sid.strip() or len(sid) > MAX_SAFETY_IDENTIFIER_CHARS):
        out.append(
            _problem(
                "safety_identifier",
                sid if not isinstance(sid, str) or len(sid) <= 40 else f"<{len(sid)} characters>",
                f"1 to {MAX_SAFETY_IDENTIFIER_CHARS} characters (hash usernames or emails)",
                "not a usable safety identifier",
            )
        )
    out += _gif_problems(request)
    out += _stream_problems(request)
    if request.seed is not None and (not isinstance(request.seed, int) or not 0 <= request.seed < 2**63):
        out.append(_problem("seed", request.seed, "0 to 2**63-1", "seed out of range"))
    return out


def _size_capability(request: EditRequest, caps: Capabilities) -> InvalidRequest | None:
    if request.size in caps.sizes:
        return None
    m = _WXH.match(request.size)
    offered = " | ".join(sorted(caps.sizes))
    if m is None or not caps.arbitrary_sizes:
        return _problem("size", request.size, offered, "size not offered here")
    why = caps.size_rule.problem(int(m.group(1)), int(m.group(2)))
    if why is not None:
        return _problem("size", request.size, f"{offered} or {caps.size_rule.describe()}", f"size not offered: {why}")
    return None


def _gif_capability(request: EditRequest, caps: Capabilities) -> list[InvalidRequest]:
    if request.output_format != "gif" or caps.gif is None:
        return []  # an unoffered format is reported with output_format
    gif = caps.gif
    out = []
    frames = request.frame_count if request.frame_count is not None else 9  # OpenAI's default
    if not gif.min_frames <= frames <= gif.max_frames:
        out.append(
            _problem("frame_count", frames, f"{gif.min_frames} to {gif.max_frames} here", "frame count not offered")
        )
    ms = request.frame_duration_ms
    if ms is not None and not gif.min_frame_ms <= ms <= gif.max_frame_ms:
        out.append(
            _problem(
                "frame_duration_ms", ms, f"{gif.min_frame_ms} to {gif.max_frame_ms} here", "frame duration not offered"
            )
        )
    limit = gif.max_edge(frames)
    m = _WXH.match(request.size)
    if limit is not None and m is not None and max(int(m.group(1)), int(m.group(2))) > limit:
        out.append(
            _problem(
                "size",
                request.size,
                f"frame edges <= {limit} px for up to {frames} frames",
                "GIF frames too large for this frame count",
            )
        )
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
    if (p := _size_capability(request, caps)) is not None:
        out.append(p)
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
    out += _gif_capability(request, caps)
    if request.background == "transparent" and not caps.transparent_background:
        out.append(
            _problem(
                "background",
                "transparent",
                "opaque or auto on this backend",
                "this backend cannot make transparent backgrounds",
            )
        )
    if request.partial_images is not None and not caps.streaming:
        out.append(_problem("stream", True, "omit it on this backend", "this backend cannot stream partial images"))
    if request.input_fidelity is not None and not caps.input_fidelity:
        out.append(
            _problem(
                "input_fidelity",
                request.input_fidelity,
                "omit it on this backend",
                "this model does not take input_fidelity",
            )
        )
    if request.complexity is not None and not caps.complexity:
        out.append(
            _problem("complexity", request.complexity, "omit it on this backend", "this model does not take complexity")
        )
    if request.markup is not None and not caps.markup:
        out.append(
            _problem(
                "markup", request.markup.name, "omit it on this backend", "this model does not take a markup layer"
            )
        )
    if not caps.remote_refs:
        for field, img in request.inputs:
            if img.is_remote:
                out.append(
                    _problem(
                        field,
                        img.ref,
                        "a local file on this backend",
                        "this backend cannot fetch remote references (file_id / URL)",
                    )
                )
                break
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


def skipped_checks(request: EditRequest) -> list[str]:
    """The pixel checks not made because an input is a remote reference (for logs and `plan --explain`)."""
    out = []
    for field, img in request.inputs:
        if img.is_remote:
            what = "format, size, alpha" + (", same size as the first image" if field in ("mask", "markup") else "")
            out.append(f"{field} {img.ref}: remote reference, not checked here ({what}); the provider checks it")
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
