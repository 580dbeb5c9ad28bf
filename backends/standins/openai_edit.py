"""The stand-in's edit: the request rules the real API enforces (https://developers.openai.com/api/reference/
resources/images/methods/edit; per model from its capabilities in prices.yaml) for both encodings, and its fake
"model".

Multipart (`run_edit`) and JSON (`run_json_edit`) are brought to one `_Call` (text fields, decoded images), then
checked and run by `_execute`. The fake edit resizes the first input to the output size and paints the mask's
transparent region (or tints the whole picture without a mask) in a colour derived from the prompt, so results
differ per prompt and variant and are checkable; GIF output is an animated loop of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from backends.base import BACKGROUNDS, COMPLEXITIES, INPUT_FIDELITIES, MAX_IMAGES, MAX_PROMPT_CHARS, MODERATIONS
from backends.pricing import (
    ModelCapabilities,
    estimate_text_tokens,
    input_image_tokens,
    output_size_for,
    output_tokens,
)
from backends.standins.openai_server import (
    DEFAULT_MODEL,
    FIELDS,
    IMAGE_MIMES,
    JSON_FIELDS,
    ApiError,
    RecordedPart,
    RecordedRequest,
    b64,
    encode_image,
)

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
_JSON_INTS = ("n", "output_compression", "frame_count", "frame_duration_ms", "partial_images")
_DATA_URL = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.DOTALL)
MAX_SAFETY_IDENTIFIER = 128


@dataclass
class _Call:
    fields: dict[str, str]
    images: list[Image.Image]
    mask: Image.Image | None
    markup: Image.Image | None


def _bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _int(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(
            f"Invalid type for '{name}': expected an integer, but got a string instead.", name, "invalid_type"
        ) from None
    if not lo <= value <= hi:
        raise _bad(f"Invalid '{name}': {value}. Expected a value between {lo} and {hi}.", name)
    return value


def _open(data: bytes, param: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # noqa: BLE001 - any decoder failure is the same answer from the API
        raise ApiError(
            400,
            f"Invalid image file or mode for {param}, please check your image file.",
            type="image_generation_user_error",
            param=param,
            code="invalid_image_file",
        ) from None
    return img


# ---- multipart ----------------------------------------------------------------------------------------------


def _decode(part: RecordedPart, data: bytes, param: str) -> Image.Image:
    if part.filename is None:
        raise _bad(
            f"Invalid type for '{param}': expected one of an array of files or file, but got a string instead.",
            param,
            "invalid_type",
        )
    if part.content_type is None:
        raise _bad(f"Invalid file '{param}': failed to determine mimetype.", param, "missing_file_mimetype")
    if part.content_type not in IMAGE_MIMES:
        raise _bad(
            f"Invalid file '{param}': unsupported mimetype ('{part.content_type}'). Supported file formats "
            "are 'image/jpeg', 'image/png', and 'image/webp'.",
            param,
            "unsupported_file_mimetype",
        )
    return _open(data, param)


def run_edit(server: FakeOpenAIServer, rec: RecordedRequest, parts: list[tuple[RecordedPart, bytes]]) -> dict:
    for name in rec.fields:
        if name not in FIELDS:
            raise _bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    names = [p.name for p, _ in parts]
    if names.count("image") > 1 or ("image" in names and "image[]" in names):
        raise _bad(
            "Duplicate parameter: 'image'. You provided multiple values for this parameter; to send an "
            "array use the array syntax instead e.g. 'image[]=<value>'.",
            "image",
            "duplicate_parameter",
        )
    for p, _ in parts:
        if p.filename is not None and p.name not in ("image", "image[]", "mask", "markup"):
            raise _bad(f"Unknown parameter: '{p.name}'.", p.name, "unknown_parameter")
    files = [(p, data) for p, data in parts if p.name in ("image", "image[]")]
    if not files:
        raise _bad("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    _check_count(len(files))
    images = [_decode(p, data, "image" if p.name == "image" else f"image[{i}]") for i, (p, data) in enumerate(files)]
    layers = {p.name: _decode(p, data, p.name) for p, data in parts if p.name in ("mask", "markup")}
    return _execute(server, _Call(dict(rec.fields), images, layers.get("mask"), layers.get("markup")))


def _check_count(count: int) -> None:
    if count > MAX_IMAGES:
        raise _bad(
            f"Invalid 'image': array too long. Expected at most {MAX_IMAGES} items, got {count}.",
            "image",
            "array_above_max_length",
        )


# ---- JSON ---------------------------------------------------------------------------------------------------


def _resolve_ref(server: FakeOpenAIServer, ref: Any, param: str) -> Image.Image:
    """`{file_id}` from the Files store, `{image_url}` as a data URL or an https URL from `remote_images`."""
    if not isinstance(ref, dict) or len(ref) != 1 or not ({"file_id", "image_url"} & set(ref)):
        raise _bad(f"Invalid '{param}': provide exactly one of `image_url` or `file_id`.", param)
    if "file_id" in ref:
        entry = server.files.get(ref["file_id"]) if isinstance(ref["file_id"], str) else None
        if entry is None:
            raise _bad(f"No such File object: '{ref['file_id']}'.", f"{param}.file_id")
        return _open(entry["content"], param)
    url = ref["image_url"]
    if not isinstance(url, str) or len(url) > 20_971_520:
        raise _bad(f"Invalid '{param}.image_url': expected a URL or data URL.", f"{param}.image_url")
    m = _DATA_URL.match(url)
    if m is not None:
        if m.group(1) not in IMAGE_MIMES:
            raise _bad(f"Invalid '{param}': unsupported image type '{m.group(1)}'.", param, "unsupported_file_mimetype")
        try:
            return _open(base64.b64decode(m.group(2), validate=True), param)
        except (binascii.Error, ValueError):
            raise _bad(f"Invalid '{param}.image_url': not valid base64.", f"{param}.image_url") from None
    if url.startswith("https://") and url in server.remote_images:
        return _open(server.remote_images[url], param)
    raise _bad(f"Error while downloading {url}.", f"{param}.image_url", "invalid_image_url")


def run_json_edit(server: FakeOpenAIServer, rec: RecordedRequest, body: dict) -> dict:
    for name in body:
        if name not in JSON_FIELDS:
            raise _bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    refs = body.get("images")
    if not isinstance(refs, list) or not refs:
        raise _bad("Missing required parameter: 'images'.", "images", "missing_required_parameter")
    _check_count(len(refs))
    fields: dict[str, str] = {}
    for name, value in body.items():
        if name in ("images", "mask", "markup") or value is None:
            continue
        if name in _JSON_INTS and (not isinstance(value, int) or isinstance(value, bool)):
            raise _bad(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
        if name == "stream":
            if not isinstance(value, bool):
                raise _bad("Invalid type for 'stream': expected a boolean.", name, "invalid_type")
            value = str(value).lower()
        elif name not in _JSON_INTS and not isinstance(value, str):
            raise _bad(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
        fields[name] = str(value)
    images = [_resolve_ref(server, ref, f"images[{i}]") for i, ref in enumerate(refs)]
    layers = {k: _resolve_ref(server, body[k], k) for k in ("mask", "markup") if body.get(k) is not None}
    return _execute(server, _Call(fields, images, layers.get("mask"), layers.get("markup")))


# ---- the rules, per model -----------------------------------------------------------------------------------


def _capabilities(server: FakeOpenAIServer, model: str) -> ModelCapabilities:
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


def _check_fields(f: dict[str, str], model: str, caps: ModelCapabilities) -> None:
    if "response_format" in f:
        raise _bad("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
    if f.get("stream") in ("true", "True", "1"):
        raise _bad("Streaming is not offered by this stand-in.", "stream", "unsupported_parameter")
    prompt = f.get("prompt")
    if not prompt:
        raise _bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _bad(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT_CHARS}, "
            f"but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    for name, allowed in {**_ENUMS, "quality": caps.qualities}.items():
        if name in f and f[name] not in allowed:
            raise _bad(f"Invalid value: '{f[name]}'. Supported values are: {', '.join(map(repr, allowed))}.", name)
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
            raise _bad(f"The model '{model}' does not support '{name}'.", name, "unsupported_parameter")
    if f.get("background") == "transparent":
        if not caps.transparent_background:
            raise _bad(f"The model '{model}' does not support transparent backgrounds.", "background")
        if f.get("output_format", "png") not in ("png", "webp"):
            raise _bad("Transparent background requires output_format png or webp.", "background")
    sid = f.get("safety_identifier")
    if sid is not None and len(sid) > MAX_SAFETY_IDENTIFIER:
        raise _bad(
            f"Invalid 'safety_identifier': string too long. Expected a string with maximum length "
            f"{MAX_SAFETY_IDENTIFIER}, but got a string with length {len(sid)} instead.",
            "safety_identifier",
            "string_above_max_length",
        )
    _check_gif(f, model, caps)


def _check_gif(f: dict[str, str], model: str, caps: ModelCapabilities) -> None:
    gif = f.get("output_format") == "gif"
    if f.get("output_format") == "svg":
        raise _bad("SVG output is not offered by this stand-in.", "output_format", "unsupported_value")
    for name in ("frame_count", "frame_duration_ms"):
        if name in f and not gif:
            raise _bad(f"'{name}' is only supported with output_format=gif.", name)
    if not gif:
        return
    if caps.gif is None:
        raise _bad(f"GIF output is not available for the model '{model}'.", "output_format", "unsupported_value")
    if "mask" in f:
        raise _bad("GIF output does not support masks.", "mask")
    if "output_compression" in f:
        raise _bad("GIF output does not support custom output compression.", "output_compression")
    if "partial_images" in f:
        raise _bad("GIF output does not support partial images.", "partial_images")
    lo, hi = caps.gif.frame_count
    _int(f, "frame_count", 9, lo, hi)
    lo, hi = caps.gif.frame_duration_ms
    _int(f, "frame_duration_ms", 200, lo, hi)


def _size(caps: ModelCapabilities, requested: str, first: Image.Image, frames: int | None) -> tuple[int, int]:
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
            raise _bad(
                f"Invalid value: '{size}'. Supported values are: {', '.join(map(repr, spec.presets))}"
                + (" and WIDTHxHEIGHT within the model's limits." if spec.arbitrary else "."),
                "size",
            )
    w, h = (int(v) for v in size.split("x"))
    if frames is not None and caps.gif is not None:
        limit = next((e for n, e in sorted(caps.gif.max_edge_by_frames.items()) if frames <= n), None)
        if limit is not None and max(w, h) > limit:
            if requested != "auto":
                raise _bad(f"GIF frames of {w}x{h} exceed this model's GIF size limits for {frames} frames.", "size")
            w, h = round(w * limit / max(w, h)) // 16 * 16, round(h * limit / max(w, h)) // 16 * 16  # auto: fit
    return w, h


def _paint(
    first: Image.Image, mask: Image.Image | None, size: tuple[int, int], prompt: str, k: int, transparent: bool
) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}|{k}".encode()).digest()
    colour = (digest[0], digest[1], digest[2], 0 if transparent else 255)
    out = first.convert("RGBA").resize(size, Image.Resampling.BILINEAR)
    if mask is not None:
        region = mask.getchannel("A").resize(size, Image.Resampling.NEAREST).point(lambda a: 255 if a == 0 else 0)
        out.paste(Image.new("RGBA", size, colour), (0, 0), region)
    else:
        out = Image.blend(out, Image.new("RGBA", size, colour[:3] + (255,)), 0.3)
    return out


def _check_layers(call: _Call) -> None:
    first = call.images[0]
    if call.mask is not None:
        if call.mask.format != "PNG" or "A" not in call.mask.getbands():
            raise _bad("Invalid mask: the mask must be a PNG with an alpha channel.", "mask")
        if call.mask.size != first.size:
            raise _bad(
                f"Invalid mask image: the mask ({call.mask.width}x{call.mask.height}) and the image "
                f"({first.width}x{first.height}) must have the same dimensions.",
                "mask",
            )
    markup = call.markup
    if markup is not None:
        if call.mask is not None:
            raise _bad("'markup' cannot be combined with 'mask'.", "markup")
        if markup.size != first.size:
            raise _bad("Invalid markup: it must match the first image's dimensions.", "markup")
        if "A" not in markup.getbands() or markup.getchannel("A").getextrema()[0] != 0:
            raise _bad("Invalid markup: it must contain transparent pixels.", "markup")


def _execute(server: FakeOpenAIServer, call: _Call) -> dict:
    f = call.fields
    if call.mask is not None:
        f.setdefault("mask", "(file)")  # GIF refuses a mask; the marker is not a field the caller sent
    if call.markup is not None:
        f.setdefault("markup", "(file)")
    model = f.get("model", DEFAULT_MODEL)
    caps = _capabilities(server, model)
    _check_fields(f, model, caps)
    _check_layers(call)
    prices = server.prices.models[model]
    n = _int(f, "n", 1, 1, 10)
    fmt = f.get("output_format", "png")
    compression = _int(f, "output_compression", 100, 0, 100)
    prompt = f["prompt"]
    if any(word in prompt.lower() for word in server.moderation_words):
        raise ApiError(
            400,
            "Your request was rejected by the safety system. If you believe this is an error, "
            "contact us at help.openai.com and include the request ID req_standin. "
            "safety_violations=[stand-in trigger].",
            type="image_generation_user_error",
            code="moderation_blocked",
            extra={"moderation_details": {"moderation_stage": "input", "categories": ["stand-in"]}},
        )
    frames = _int(f, "frame_count", 9, 2, 16) if fmt == "gif" else None
    frame_ms = _int(f, "frame_duration_ms", 200, 20, 655_350)
    width, height = _size(caps, f.get("size", "auto"), call.images[0], frames)
    quality = f.get("quality", "auto")
    quality = server.auto_quality if quality == "auto" else quality
    transparent = f.get("background") == "transparent"
    data = [
        {
            "b64_json": b64(
                encode_image(
                    _paint(call.images[0], call.mask, (width, height), prompt, k, transparent),
                    fmt,
                    compression if fmt != "png" else None,
                    frames or 1,
                    frame_ms,
                )
            )
        }
        for k in range(n)
    ]
    rule = prices.input_image_tokens or server.prices.input_image_tokens
    high = f.get("input_fidelity") == "high" and caps.input_fidelity
    inputs = call.images + ([call.markup] if call.markup is not None else [])
    image_in = sum(input_image_tokens(i.width, i.height, high_fidelity=high, rule=rule) for i in inputs)
    text_in = estimate_text_tokens(prompt)
    out = output_tokens(prices, quality, f"{width}x{height}") * n * (frames or 1)
    details: dict[str, int] = {"text_tokens": text_in, "image_tokens": image_in}
    if server.cached_tokens:
        details["cached_tokens"] = min(server.cached_tokens, text_in + image_in)
    return {
        "created": int(time.time()),
        "data": data,
        "background": "transparent" if transparent else "opaque",
        "output_format": fmt,
        "quality": quality,
        "size": f"{width}x{height}",
        "usage": {
            "input_tokens": text_in + image_in,
            "output_tokens": out,
            "total_tokens": text_in + image_in + out,
            "input_tokens_details": details,
            "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
        },
    }
