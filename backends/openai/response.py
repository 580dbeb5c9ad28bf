"""A 200 from OpenAI's image edit endpoint, read as pure functions: the images (left as the provider's base64
until they are needed), their size and format from the first one's header, `usage` with its splits, the exact
cost it bills.

    parsed = read_bytes(response.content)    # fast: the base64 is cut out of the JSON, not scanned by a parser
    parsed = read_response(body)             # the same from parsed JSON (a streamed `completed` event)
    parsed = decode_images(parsed)           # the image bytes, when they are needed (files, checks)

Base64 cannot hold `"` or `\\`, so `read_bytes` finds each `"b64_json": "..."` value with a byte search and parses
only the rest of the JSON; anything unusual (an escaped character, no such key) goes through `json.loads`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from PIL import Image

from backends.base import Usage
from backends.errors import BackendUnavailable
from backends.pricing import ModelPrices, token_cost


@dataclass(frozen=True)
class ParsedResponse:
    images: tuple[bytes, ...]
    width: int
    height: int
    output_format: str | None
    quality: str | None
    background: str | None
    usage: Usage | None
    text_out: int = 0  # output text tokens (billed at text_out, or image_out where a model has no such rate)
    image_out: int = 0
    detected_format: str | None = None  # what the bytes really are (a gateway may ignore output_format)
    raw_usage: Mapping[str, Any] | None = None  # `usage` exactly as the provider sent it (a server passes it on)
    images_b64: tuple[str | memoryview, ...] = ()  # the images' base64 as the provider sent it (passed on as is)


_HEADER_CHARS = 87_384  # base64 of the first 64 KiB: enough for any image header (a JPEG's may follow EXIF/ICC)
_FORMAT_NAMES = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}


def read_response(body: Any) -> ParsedResponse:
    """The answer without decoding its images (`images_b64` set, `images` empty): usage, and the first image's
    size and format from its header. `decode_images` does the rest; a caller may answer from this first."""
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list) or not body["data"]:
        raise BackendUnavailable("the server answered 200 without any images in `data`")
    encoded = []
    for i, item in enumerate(body["data"]):
        b64 = item.get("b64_json") if isinstance(item, Mapping) else None
        if not isinstance(b64, str | memoryview) or not b64:
            raise BackendUnavailable(f"data[{i}] has no b64_json (is this an OpenAI-compatible image API?)")
        encoded.append(b64)
    width, height, detected = _header(encoded[0])
    usage, text_out, image_out = _parse_usage(body.get("usage"))
    return ParsedResponse(
        images=(),
        width=width,
        height=height,
        output_format=body.get("output_format"),
        quality=body.get("quality"),
        background=body.get("background"),
        usage=usage,
        text_out=text_out,
        image_out=image_out,
        detected_format=detected,
        raw_usage=body.get("usage") if isinstance(body.get("usage"), Mapping) else None,
        images_b64=tuple(encoded),
    )


def _header(b64: str | memoryview) -> tuple[int, int, str | None]:
    """(width, height, format) of a base64 image, from the decoded start of it (all of it if that is not enough)."""
    for chars in (min(len(b64), _HEADER_CHARS) // 4 * 4, len(b64)):
        try:
            with Image.open(io.BytesIO(base64.b64decode(b64[:chars]))) as img:
                return img.width, img.height, _FORMAT_NAMES.get(img.format or "")
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a broken answer
            if chars >= len(b64):
                raise BackendUnavailable(f"data[0] is not a decodable image ({exc.__class__.__name__})") from None
    raise AssertionError("unreachable")


def decode_images(parsed: ParsedResponse) -> ParsedResponse:
    """`parsed` with every image decoded from its base64 (strictly: a broken answer is an error)."""
    images = []
    for i, b64 in enumerate(parsed.images_b64):
        try:
            images.append(_decode(b64))
        except (binascii.Error, ValueError):
            raise BackendUnavailable(f"data[{i}].b64_json is not valid base64") from None
    return replace(parsed, images=tuple(images))


_SLICE = 1 << 19  # base64 characters per slice (a multiple of 4): ~0.5 ms of work each


def _decode(b64: str | memoryview) -> bytes:
    """Strict base64 decoding in slices, letting other threads run between them: one call over megabytes would
    hold the GIL for ~10 ms, and a server answering from the base64 meanwhile would wait for it."""
    if len(b64) <= _SLICE:
        return base64.b64decode(b64, validate=True)
    out = bytearray()
    for start in range(0, len(b64), _SLICE):
        out += base64.b64decode(b64[start : start + _SLICE], validate=True)
        time.sleep(0)  # releases the GIL
    return bytes(out)


_B64_VALUE = re.compile(rb'"b64_json"\s*:\s*"')


def read_bytes(content: bytes) -> ParsedResponse:
    """`read_response` of a raw JSON body, without running a JSON parser over the megabytes of base64: each
    `b64_json` value is cut out by a byte search and the small rest is parsed. Falls back to `json.loads` for
    anything unusual."""
    images: list[memoryview] = []
    rest, pos, view = [], 0, memoryview(content)
    while (key := content.find(b'"b64_json"', pos)) >= 0:  # a byte search, not a regex over the megabytes
        m = _B64_VALUE.match(content, key)
        if m is None:
            return read_response(_loads(content))
        end = content.find(b'"', m.end())
        if end < 0 or content.find(b"\\", m.end(), end) >= 0:  # an escape inside: let the JSON parser handle it
            return read_response(_loads(content))
        rest += [content[pos : m.end()], b'"']
        images.append(view[m.end() : end])  # no copy of the megabytes: a view into the body
        pos = end + 1
    if not images:
        return read_response(_loads(content))
    body = _loads(b"".join([*rest, content[pos:]]))
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or len(data) != len(images):
        return read_response(_loads(content))
    for item, b64 in zip(data, images, strict=True):
        if isinstance(item, dict):
            item["b64_json"] = b64
    return read_response(body)


def _loads(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise BackendUnavailable("HTTP 200 with a body that is not JSON") from None


def _parse_usage(raw: Any) -> tuple[Usage | None, int, int]:
    """Usage with its splits: input text/image tokens, cached input (if the server reports it), output image/text."""
    if not isinstance(raw, Mapping):
        return None, 0, 0
    details = raw.get("input_tokens_details") or {}
    out_details = raw.get("output_tokens_details") or {}
    output = int(raw.get("output_tokens") or 0)
    text_out = int(out_details.get("text_tokens") or 0)
    image_out = int(out_details.get("image_tokens", output - text_out) or 0)
    text_in = int(details.get("text_tokens") or 0)
    image_in = int(details.get("image_tokens") or 0)
    cached_text, cached_image = _cached(details, text_in, image_in)
    usage = Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        output_tokens=output,
        total_tokens=int(raw.get("total_tokens") or 0),
        output_image_tokens=image_out,
        output_text_tokens=text_out,
        cached_text_tokens=cached_text,
        cached_image_tokens=cached_image,
    )
    return usage, text_out, image_out


def _cached(details: Mapping[str, Any], text_in: int, image_in: int) -> tuple[int, int]:
    """(cached text, cached image) input tokens. The Images API's usage has no cached field today; should one
    appear as a bare `cached_tokens` total, it is put on text first: the smaller discount, so never underbilled."""
    split = details.get("cached_tokens_details")
    if isinstance(split, Mapping):
        return min(int(split.get("text_tokens") or 0), text_in), min(int(split.get("image_tokens") or 0), image_in)
    total = int(details.get("cached_tokens") or 0)
    on_text = min(total, text_in)
    return on_text, min(total - on_text, image_in)


def cost_from_usage(parsed: ParsedResponse, prices: ModelPrices) -> Decimal:
    """Exact USD for what the response says was used."""
    assert parsed.usage is not None
    u = parsed.usage
    text_in = u.input_text_tokens
    image_in = u.input_image_tokens
    if not text_in and not image_in:  # a gateway that gives only the total: bill it all as image input
        image_in = u.input_tokens
    return token_cost(
        prices,
        text_in=text_in,
        image_in=image_in,
        image_out=parsed.image_out,
        text_out=parsed.text_out,
        cached_text_in=u.cached_text_tokens,
        cached_image_in=u.cached_image_tokens,
    )


def cost_of_usage(raw_usage: Any, prices: ModelPrices) -> Decimal | None:
    """What a `usage` object as the provider sent it was billed (None: there is no usage to read)."""
    usage, text_out, image_out = _parse_usage(raw_usage)
    if usage is None:
        return None
    return cost_from_usage(ParsedResponse((), 0, 0, None, None, None, usage, text_out, image_out), prices)
