"""The stand-in's request rules (as the real API enforces them) and its fake "model". Reference:
https://developers.openai.com/api/reference/resources/images/methods/edit

The fake edit resizes the first input to the output size and paints the mask's transparent region (or tints
the whole picture without a mask) in a colour derived from the prompt, so results differ per prompt and
variant and are checkable.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from typing import TYPE_CHECKING

from PIL import Image

from backends.base import BACKGROUNDS, INPUT_FIDELITIES, MAX_IMAGES, MAX_PROMPT_CHARS, OUTPUT_FORMATS, QUALITIES
from backends.pricing import TOKEN_SIZES, estimate_text_tokens, input_image_tokens, output_size_for, output_tokens
from backends.standins.openai_server import (
    DEFAULT_MODEL,
    FIELDS,
    IMAGE_MIMES,
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
    "quality": QUALITIES,
    "output_format": OUTPUT_FORMATS,
    "background": BACKGROUNDS,
    "input_fidelity": INPUT_FIDELITIES,
}


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


def _images(parts: list[tuple[RecordedPart, bytes]]) -> tuple[list[Image.Image], Image.Image | None]:
    names = [p.name for p, _ in parts]
    if names.count("image") > 1 or ("image" in names and "image[]" in names):
        raise _bad(
            "Duplicate parameter: 'image'. You provided multiple values for this parameter; to send an "
            "array use the array syntax instead e.g. 'image[]=<value>'.",
            "image",
            "duplicate_parameter",
        )
    files = [(p, data) for p, data in parts if p.name in ("image", "image[]")]
    if not files:
        raise _bad("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(files) > MAX_IMAGES:
        raise _bad(
            f"Invalid 'image': array too long. Expected at most {MAX_IMAGES} items, got {len(files)}.",
            "image",
            "array_above_max_length",
        )
    images = [_decode(p, data, "image" if p.name == "image" else f"image[{i}]") for i, (p, data) in enumerate(files)]
    mask = None
    for p, data in parts:
        if p.name == "mask":
            mask = _decode(p, data, "mask")
            if mask.format != "PNG" or "A" not in mask.getbands():
                raise _bad("Invalid mask: the mask must be a PNG with an alpha channel.", "mask")
            if mask.size != images[0].size:
                raise _bad(
                    f"Invalid mask image: the mask ({mask.width}x{mask.height}) and the image "
                    f"({images[0].width}x{images[0].height}) must have the same dimensions.",
                    "mask",
                )
    return images, mask


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


def _check_fields(server: FakeOpenAIServer, f: dict[str, str]) -> None:
    for name in f:
        if name not in FIELDS:
            raise _bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    model = f.get("model", DEFAULT_MODEL)
    if model not in server.prices.models:
        raise ApiError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    if "response_format" in f:
        raise _bad("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
    if "input_fidelity" in f and not server.prices.models[model].input_fidelity:
        raise _bad(f"input_fidelity is not supported for model '{model}'.", "input_fidelity", "unsupported_parameter")
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
    for name, allowed in _ENUMS.items():
        if name in f and f[name] not in allowed:
            raise _bad(f"Invalid value: '{f[name]}'. Supported values are: {', '.join(map(repr, allowed))}.", name)
    if f.get("background") == "transparent" and f.get("output_format", "png") == "jpeg":
        raise _bad("Transparent background requires output_format png or webp.", "background")


def _size(server: FakeOpenAIServer, model: str, size: str, first: Image.Image) -> tuple[int, int]:
    if size == "auto":
        size = output_size_for("auto", first.width, first.height)
    elif size not in TOKEN_SIZES:
        m = _WXH.match(size)
        ok = m and server.prices.models[model].arbitrary_sizes
        w, h = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        if not ok or w % 16 or h % 16 or max(w, h) > 3840 or max(w, h) > 3 * min(w, h):
            raise _bad(
                f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.",
                "size",
            )
    w, h = size.split("x")
    return int(w), int(h)


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


def run_edit(server: FakeOpenAIServer, rec: RecordedRequest, parts: list[tuple[RecordedPart, bytes]]) -> dict:
    f = rec.fields
    _check_fields(server, f)
    images, mask = _images(parts)
    model = f.get("model", DEFAULT_MODEL)
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
    width, height = _size(server, model, f.get("size", "auto"), images[0])
    quality = f.get("quality", "auto")
    quality = server.auto_quality if quality == "auto" else quality
    transparent = f.get("background") == "transparent"
    data = [
        {
            "b64_json": b64(
                encode_image(
                    _paint(images[0], mask, (width, height), prompt, k, transparent),
                    fmt,
                    compression if fmt != "png" else None,
                )
            )
        }
        for k in range(n)
    ]
    high = f.get("input_fidelity") == "high" and prices.input_fidelity
    image_in = sum(
        input_image_tokens(i.width, i.height, high_fidelity=high, rule=server.prices.input_image_tokens) for i in images
    )
    text_in = estimate_text_tokens(prompt)
    out = output_tokens(prices, quality, f"{width}x{height}") * n
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
            "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in},
            "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
        },
    }
