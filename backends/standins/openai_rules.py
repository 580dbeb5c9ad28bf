"""The stand-in's request rules per model, as the real API enforces them
(https://developers.openai.com/api/reference/resources/images/methods/edit): each model's capabilities from
prices.yaml (with its `unverified:` features when the server is told to accept them), enums, GIF limits, sizes,
and the mask and markup layers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from PIL import Image

from backends.base import BACKGROUNDS, COMPLEXITIES, INPUT_FIDELITIES, MAX_PROMPT_CHARS, MODERATIONS
from backends.pricing import ModelCapabilities, output_size_for
from backends.standins.openai_server import ApiError

if TYPE_CHECKING:
    from backends.standins.openai_server import FakeOpenAIServer

_WXH = re.compile(r"^(\d+)x(\d+)$")
_ENUMS = {
    "output_format": ("png", "jpeg", "webp", "gif", "svg"),
    "background": BACKGROUNDS,
    "input_fidelity": INPUT_FIDELITIES,
    "complexity": COMPLEXITIES,
    "moderation": MODERATIONS,
}
MAX_SAFETY_IDENTIFIER = 128


def bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def is_stream(fields: dict[str, str]) -> bool:
    return fields.get("stream") in ("true", "True", "1")


def int_field(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(
            f"Invalid type for '{name}': expected an integer, but got a string instead.", name, "invalid_type"
        ) from None
    if not lo <= value <= hi:
        raise bad(f"Invalid '{name}': {value}. Expected a value between {lo} and {hi}.", name)
    return value


def capabilities_for(server: FakeOpenAIServer, model: str) -> ModelCapabilities:
    entry = server.prices.models.get(model)
    if entry is None or entry.status == "retired":
        raise ApiError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    if not server.accept_unverified or not entry.unverified:
        return entry.capabilities
    data = entry.capabilities.model_dump()
    for override in entry.unverified.values():
        data.update(override)
    return ModelCapabilities.model_validate(data)


def check_fields(f: dict[str, str], model: str, caps: ModelCapabilities) -> None:
    if "response_format" in f:
        raise bad("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
    if is_stream(f):
        if not caps.streaming:
            raise bad(
                f"Unsupported value: 'stream' does not support true with the model '{model}'.",
                "stream",
                "unsupported_value",
            )
        int_field(f, "partial_images", 0, 0, 3)
    prompt = f.get("prompt")
    if not prompt:
        raise bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise bad(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, "
            f"but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    for name, allowed in {**_ENUMS, "quality": caps.qualities}.items():
        if name in f and f[name] not in allowed:
            raise bad(f"Invalid value: '{f[name]}'. Supported values are: {', '.join(map(repr, allowed))}.", name)
    if "input_fidelity" in f and not caps.input_fidelity:
        raise ApiError(
            400,
            f"The model '{model}' does not support the 'input_fidelity' parameter.",
            type="image_generation_user_error",
            param="input_fidelity",
            code="invalid_input_fidelity_model",
        )
    for name in ("complexity", "markup"):
        if name in f and not getattr(caps, name):
            raise bad(f"The model '{model}' does not support '{name}'.", name, "unsupported_parameter")
    if f.get("background") == "transparent":
        if not caps.transparent_background:
            raise bad(f"The model '{model}' does not support transparent backgrounds.", "background")
        if f.get("output_format", "png") not in ("png", "webp"):
            raise bad("Transparent background requires output_format png or webp.", "background")
    sid = f.get("safety_identifier")
    if sid is not None and len(sid) > MAX_SAFETY_IDENTIFIER:
        raise bad(
            f"Invalid 'safety_identifier': string too long. Expected a string with maximum length "
            f"{MAX_SAFETY_IDENTIFIER}, but got a string with length {len(sid)} instead.",
            "safety_identifier",
            "string_above_max_length",
        )
    _check_gif(f, model, caps)


def _check_gif(f: dict[str, str], model: str, caps: ModelCapabilities) -> None:
    gif = f.get("output_format") == "gif"
    if f.get("output_format") == "svg":
        raise bad("SVG output is not offered by this stand-in.", "output_format", "unsupported_value")
    for name in ("frame_count", "frame_duration_ms"):
        if name in f and not gif:
            raise bad(f"'{name}' is only supported with output_format=gif.", name)
    if not gif:
        return
    if caps.gif is None:
        raise bad(f"GIF output is not available for the model '{model}'.", "output_format", "unsupported_value")
    if "mask" in f:
        raise bad("GIF output does not support masks.", "mask")
    if "output_compression" in f:
        raise bad("GIF output does not support custom output compression.", "output_compression")
    if "partial_images" in f:
        raise bad("GIF output does not support partial images.", "partial_images")
    lo, hi = caps.gif.frame_count
    int_field(f, "frame_count", 9, lo, hi)
    lo, hi = caps.gif.frame_duration_ms
    int_field(f, "frame_duration_ms", 200, lo, hi)


def output_size(caps: ModelCapabilities, requested: str, first: Image.Image, frames: int | None) -> tuple[int, int]:
    spec = caps.sizes
    size = requested
    if size == "auto":
        size = output_size_for("auto", first.width, first.height)
    elif size not in spec.presets:
        m = _WXH.match(size)
        w, h = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        if (
            m is None
            or not spec.arbitrary
            or w % spec.edge_multiple
            or h % spec.edge_multiple
            or max(w, h) > spec.max_edge
            or max(w, h) > spec.max_ratio * min(w, h)
            or not spec.min_pixels <= w * h <= spec.max_pixels
        ):
            raise bad(
                f"Invalid value: '{size}'. Supported values are: {', '.join(map(repr, spec.presets))}"
                + (" and WIDTHxHEIGHT within the model's limits." if spec.arbitrary else "."),
                "size",
            )
    w, h = (int(v) for v in size.split("x"))
    if frames is not None and caps.gif is not None:
        limit = next((e for n, e in sorted(caps.gif.max_edge_by_frames.items()) if frames <= n), None)
        if limit is not None and max(w, h) > limit:
            if requested != "auto":
                raise bad(f"GIF frames of {w}x{h} exceed this model's GIF size limits for {frames} frames.", "size")
            w, h = round(w * limit / max(w, h)) // 16 * 16, round(h * limit / max(w, h)) // 16 * 16  # auto: fit
    return w, h


def check_layers(first: Image.Image, mask: Image.Image | None, markup: Image.Image | None) -> None:
    if mask is not None:
        if mask.format != "PNG" or "A" not in mask.getbands():
            raise bad("Invalid mask: the mask must be a PNG with an alpha channel.", "mask")
        if mask.size != first.size:
            raise bad(
                f"Invalid mask image: the mask ({mask.width}x{mask.height}) and the image "
                f"({first.width}x{first.height}) must have the same dimensions.",
                "mask",
            )
    if markup is not None:
        if mask is not None:
            raise bad("'markup' cannot be combined with 'mask'.", "markup")
        if markup.size != first.size:
            raise bad("Invalid markup: it must match the first image's dimensions.", "markup")
        if "A" not in markup.getbands() or markup.getchannel("A").getextrema()[0] != 0:
            raise bad("Invalid markup: it must contain transparent pixels.", "markup")
