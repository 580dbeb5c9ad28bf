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

from PIL import Image, ImageChops

from backends.base import MAX_IMAGES
from backends.pricing import (
    estimate_text_tokens,
    input_image_tokens,
    output_tokens,
)
from backends.standins import openai_rules as rules
from backends.standins.openai_rules import bad, int_field
from backends.standins.openai_server import (
    DEFAULT_MODEL,
    FIELDS,
    IMAGE_MIMES,
    JSON_FIELDS,
    ApiError,
    RecordedPart,
    RecordedRequest,
)

if TYPE_CHECKING:
    from backends.standins.openai_server import FakeOpenAIServer

_JSON_INTS = ("n", "output_compression", "frame_count", "frame_duration_ms", "partial_images")
_DATA_URL = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.DOTALL)


@dataclass
class _Call:
    fields: dict[str, str]
    images: list[Image.Image]
    mask: Image.Image | None
    markup: Image.Image | None


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
        raise bad(
            f"Invalid type for '{param}': expected one of an array of files or file, but got a string instead.",
            param,
            "invalid_type",
        )
    if part.content_type is None:
        raise bad(f"Invalid file '{param}': failed to determine mimetype.", param, "missing_file_mimetype")
    if part.content_type not in IMAGE_MIMES:
        raise bad(
            f"Invalid file '{param}': unsupported mimetype ('{part.content_type}'). Supported file formats "
            "are 'image/jpeg', 'image/png', and 'image/webp'.",
            param,
            "unsupported_file_mimetype",
        )
    return _open(data, param)


def run_edit(server: FakeOpenAIServer, rec: RecordedRequest, parts: list[tuple[RecordedPart, bytes]]) -> dict:
    for name in rec.fields:
        if name not in FIELDS:
            raise bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    names = [p.name for p, _ in parts]
    if names.count("image") > 1 or ("image" in names and "image[]" in names):
        raise bad(
            "Duplicate parameter: 'image'. You provided multiple values for this parameter; to send an "
            "array use the array syntax instead e.g. 'image[]=<value>'.",
            "image",
            "duplicate_parameter",
        )
    for p, _ in parts:
        if p.filename is not None and p.name not in ("image", "image[]", "mask", "markup"):
            raise bad(f"Unknown parameter: '{p.name}'.", p.name, "unknown_parameter")
    files = [(p, data) for p, data in parts if p.name in ("image", "image[]")]
    if not files:
        raise bad("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    _check_count(len(files))
    images = [_decode(p, data, "image" if p.name == "image" else f"image[{i}]") for i, (p, data) in enumerate(files)]
    layers = {p.name: _decode(p, data, p.name) for p, data in parts if p.name in ("mask", "markup")}
    return _execute(server, _Call(dict(rec.fields), images, layers.get("mask"), layers.get("markup")))


def _check_count(count: int) -> None:
    if count > MAX_IMAGES:
        raise bad(
            f"Invalid 'image': array too long. Expected at most {MAX_IMAGES} items, got {count}.",
            "image",
            "array_above_max_length",
        )


# ---- JSON ---------------------------------------------------------------------------------------------------


def _resolve_ref(server: FakeOpenAIServer, ref: Any, param: str) -> Image.Image:
    """`{file_id}` from the Files store, `{image_url}` as a data URL or an https URL from `remote_images`."""
    if not isinstance(ref, dict) or len(ref) != 1 or not ({"file_id", "image_url"} & set(ref)):
        raise bad(f"Invalid '{param}': provide exactly one of `image_url` or `file_id`.", param)
    if "file_id" in ref:
        entry = server.files.get(ref["file_id"]) if isinstance(ref["file_id"], str) else None
        if entry is None:
            raise bad(f"No such File object: '{ref['file_id']}'.", f"{param}.file_id")
        if entry["purpose"] in ("batch", "batch_output"):  # a JSONL file is no image
            raise bad(f"File '{ref['file_id']}' (purpose {entry['purpose']}) is not an image.", f"{param}.file_id")
        return _open(entry["content"], param)
    url = ref["image_url"]
    if not isinstance(url, str) or len(url) > 20_971_520:
        raise bad(f"Invalid '{param}.image_url': expected a URL or data URL.", f"{param}.image_url")
    m = _DATA_URL.match(url)
    if m is not None:
        if m.group(1) not in IMAGE_MIMES:
            raise bad(f"Invalid '{param}': unsupported image type '{m.group(1)}'.", param, "unsupported_file_mimetype")
        try:
            return _open(base64.b64decode(m.group(2), validate=True), param)
        except (binascii.Error, ValueError):
            raise bad(f"Invalid '{param}.image_url': not valid base64.", f"{param}.image_url") from None
    if url.startswith("https://") and url in server.remote_images:
        return _open(server.remote_images[url], param)
    raise bad(f"Error while downloading {url}.", f"{param}.image_url", "invalid_image_url")


def run_json_edit(server: FakeOpenAIServer, rec: RecordedRequest, body: dict) -> dict:
    for name in body:
        if name not in JSON_FIELDS:
            raise bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    refs = body.get("images")
    if not isinstance(refs, list) or not refs:
        raise bad("Missing required parameter: 'images'.", "images", "missing_required_parameter")
    _check_count(len(refs))
    fields: dict[str, str] = {}
    for name, value in body.items():
        if name in ("images", "mask", "markup") or value is None:
            continue
        if name in _JSON_INTS and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
        if name == "stream":
            if not isinstance(value, bool):
                raise bad("Invalid type for 'stream': expected a boolean.", name, "invalid_type")
            value = str(value).lower()
        elif name not in _JSON_INTS and not isinstance(value, str):
            raise bad(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
        fields[name] = str(value)
    images = [_resolve_ref(server, ref, f"images[{i}]") for i, ref in enumerate(refs)]
    layers = {k: _resolve_ref(server, body[k], k) for k in ("mask", "markup") if body.get(k) is not None}
    return _execute(server, _Call(fields, images, layers.get("mask"), layers.get("markup")))


def encode_image(img: Image.Image, fmt: str, compression: int | None, frames: int = 9, frame_ms: int = 200) -> bytes:
    buf = io.BytesIO()
    if fmt == "gif":  # an animated loop: the picture sliding sideways frame by frame (quantised once: cheap)
        base = img.convert("RGB").quantize(colors=64)
        seq = [ImageChops.offset(base, k * img.width // frames, 0) for k in range(frames)]
        seq[0].save(buf, format="GIF", save_all=True, append_images=seq[1:], duration=frame_ms, loop=0)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif fmt == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=max(1, min(95, compression or 95)))
    else:
        img.save(buf, format="WEBP", quality=compression if compression is not None else 100, method=0)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_CACHE: dict[tuple[str, bytes, tuple[int, int]], Image.Image] = {}  # requests share inputs (batches of 1000s)


def _scaled(what: str, img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`img` resized to `size` (what="image": the picture, RGBA; "region": the mask's transparent pixels as a
    paste mask), computed once per content and size."""
    key = (what, hashlib.sha1(img.mode.encode() + repr(img.size).encode() + img.tobytes()).digest(), size)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) >= 64:
            _CACHE.clear()
        if what == "image":
            hit = img.convert("RGBA").resize(size, Image.Resampling.BILINEAR)
        else:
            hit = img.getchannel("A").resize(size, Image.Resampling.NEAREST).point(lambda a: 255 if a == 0 else 0)
        _CACHE[key] = hit
    return hit


def _paint(
    first: Image.Image, mask: Image.Image | None, size: tuple[int, int], prompt: str, k: int, transparent: bool
) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}|{k}".encode()).digest()
    colour = (digest[0], digest[1], digest[2], 0 if transparent else 255)
    out = _scaled("image", first, size).copy()
    if mask is not None:
        region = _scaled("region", mask, size)
        box = region.getbbox()  # paint only where the mask allows (a fill over the whole canvas is slow)
        if box is not None:
            out.paste(colour, box, region.crop(box))
    else:
        out = Image.blend(out, Image.new("RGBA", size, colour[:3] + (255,)), 0.3)
    return out


def _execute(server: FakeOpenAIServer, call: _Call) -> dict:
    f = call.fields
    if call.mask is not None:
        f.setdefault("mask", "(file)")  # GIF refuses a mask; the marker is not a field the caller sent
    if call.markup is not None:
        f.setdefault("markup", "(file)")
    model = f.get("model", DEFAULT_MODEL)
    caps = rules.capabilities_for(server, model)
    rules.check_fields(f, model, caps)
    rules.check_layers(call.images[0], call.mask, call.markup)
    prices = server.prices.models[model]
    n = int_field(f, "n", 1, 1, 10)
    fmt = f.get("output_format", "png")
    compression = int_field(f, "output_compression", 100, 0, 100)
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
    frames = int_field(f, "frame_count", 9, 2, 16) if fmt == "gif" else None
    frame_ms = int_field(f, "frame_duration_ms", 200, 20, 655_350)
    width, height = rules.output_size(caps, f.get("size", "auto"), call.images[0], frames)
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
    partials = int_field(f, "partial_images", 0, 0, 3) if rules.is_stream(f) else 0
    out += PARTIAL_IMAGE_TOKENS * partials  # "each partial image will incur an additional 100 image output tokens"
    answer = {
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
    if not rules.is_stream(f):
        return answer
    first = call.images[0].convert("RGBA").resize((width, height), Image.Resampling.BILINEAR)
    final = _paint(call.images[0], call.mask, (width, height), prompt, 0, transparent)
    previews = [  # the picture moving from the input toward the final image, as a model's partials do
        b64(
            encode_image(
                Image.blend(first, final, (k + 1) / (partials + 1)), fmt, compression if fmt != "png" else None
            )
        )
        for k in range(partials)
    ]
    return streamed(answer, previews)


PARTIAL_IMAGE_TOKENS = 100


class StreamedEdit(dict):
    """A streamed answer: the completed payload (a dict, so whatever reads `usage` from an answer still can) and
    the server-sent events to write, in order."""

    events: list[dict]


def streamed(answer: dict, previews: list[str]) -> StreamedEdit:
    shape = {k: answer[k] for k in ("background", "output_format", "quality", "size")}
    now = int(time.time())
    out = StreamedEdit(answer)
    out.events = [
        {"type": "image_edit.partial_image", "b64_json": p, "created_at": now, "partial_image_index": i, **shape}
        for i, p in enumerate(previews)
    ]
    out.events.append(
        {"type": "image_edit.completed", "b64_json": answer["data"][0]["b64_json"], "created_at": now, **shape,
         "usage": answer["usage"]}
    )  # fmt: skip
    return out
