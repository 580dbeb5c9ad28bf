"""The Gemini stand-in's request rules and its fake "model".

Like the real model, the fake regenerates the WHOLE picture (every pixel changes: a prompt-coloured tint, plus a
"subject" square in the middle, plus a thumbnail of each extra input), at the model's size for the requested
aspect ratio (about 1024x1024 pixels, sides multiples of 16). There is no mask field, so none is honoured here:
that is the client's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import uuid
from typing import TYPE_CHECKING, Any

from PIL import Image

from backends.standins.gemini_server import TRIGGERS, GoogleError

if TYPE_CHECKING:
    from backends.standins.gemini_server import FakeGeminiServer

IMAGE_MIMES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
CONFIG_FIELDS = {
    "responseModalities",
    "imageConfig",
    "responseFormat",
    "thinkingConfig",
    "temperature",
    "candidateCount",
    "seed",
    "mediaResolution",
}


def b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, as protobuf's JSON mapping accepts (google-genai sends URL-safe)."""
    return base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)


def _get(d: Any, camel: str, snake: str) -> Any:
    return d.get(camel, d.get(snake)) if isinstance(d, dict) else None


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _unknown(name: str, where: str) -> GoogleError:
    return GoogleError(
        400,
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {
                        "field": where,
                        "description": f"Invalid JSON payload received. Unknown name "
                        f"\"{name}\" at '{where}': Cannot find field.",
                    }
                ],
            }
        ],
    )


def _parts(body: dict, max_images: int) -> tuple[str, list[Image.Image]]:
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise GoogleError(400, "* GenerateContentRequest.contents: contents is not specified")
    text, images = [], []
    for c in contents:
        for i, part in enumerate(_get(c, "parts", "parts") or []):
            inline = _get(part, "inlineData", "inline_data")
            if isinstance(part.get("text"), str):
                text.append(part["text"])
            elif inline is not None:
                mime = _get(inline, "mimeType", "mime_type")
                if mime not in IMAGE_MIMES:
                    raise GoogleError(400, f"Unsupported MIME type: {mime}")
                try:
                    img = Image.open(io.BytesIO(b64decode(inline.get("data") or "")))
                    img.load()
                except (binascii.Error, ValueError, OSError):
                    raise GoogleError(
                        400,
                        f"Unable to process input image (contents.parts[{i}]). Please retry or "
                        "report in https://developers.generativeai.google/guide/troubleshooting",
                    ) from None
                images.append(img)
    if len(images) > max_images:
        raise GoogleError(400, f"Too many input images: {len(images)} (this model takes at most {max_images}).")
    if not text:
        raise GoogleError(400, "* GenerateContentRequest.contents[0].parts: a text instruction is required")
    return " ".join(text), images


def _image_options(body: dict, entry: dict) -> tuple[str | None, str | None, list[str]]:
    config = _get(body, "generationConfig", "generation_config") or {}
    for key in config:
        if _camel(key) not in CONFIG_FIELDS:  # e.g. a top-level aspectRatio (LiteLLM #20050)
            raise _unknown(key, "generation_config")
    image_cfg = (
        _get(config, "imageConfig", "image_config")
        or _get(_get(config, "responseFormat", "response_format") or {}, "image", "image")
        or {}
    )
    ratio, size = _get(image_cfg, "aspectRatio", "aspect_ratio"), _get(image_cfg, "imageSize", "image_size")
    if ratio is not None and ratio not in entry["aspect_ratios"]:
        raise GoogleError(400, f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(entry['aspect_ratios'])}")
    if size is not None and (entry.get("image_size") is None or size not in ("512", "1K", "2K", "4K")):
        raise _unknown("image_size", "generation_config.image_config")
    modalities = [
        str(m).upper() for m in _get(config, "responseModalities", "response_modalities") or ["TEXT", "IMAGE"]
    ]
    return ratio, size, modalities


def dims_for(ratio: str, side: int = 1024) -> tuple[int, int]:
    """About side x side pixels at `ratio`, each side a multiple of 16."""
    w, _, h = ratio.partition(":")
    r = int(w) / int(h)
    width = math.sqrt(side * side * r)
    return max(16, round(width / 16) * 16), max(16, round(width / r / 16) * 16)


def _paint(images: list[Image.Image], size: tuple[int, int], prompt: str, k: int) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}|{k}".encode()).digest()
    colour = (digest[0], digest[1], digest[2])
    out = images[0].convert("RGB").resize(size, Image.Resampling.BILINEAR)
    out = Image.blend(out, Image.new("RGB", size, colour), 0.25)  # the whole picture changes, as it does for real
    w, h = size
    out.paste(colour, (w // 3, h // 3, 2 * w // 3, 2 * h // 3))
    for i, extra in enumerate(images[1:]):
        thumb = extra.convert("RGB").resize((w // 8, h // 8))
        out.paste(thumb, (i * (w // 8), 0))
    return out


def _usage(server: FakeGeminiServer, entry: dict, prompt: str, n_images: int, image_out: int, text_out: int) -> dict:
    text_in = max(1, math.ceil(len(prompt) / 4))
    image_in = entry["input_image_tokens"] * n_images
    thoughts = server.thinking_tokens
    cands = image_out + text_out
    usage = {
        "promptTokenCount": text_in + image_in,
        "candidatesTokenCount": cands,
        "totalTokenCount": text_in + image_in + cands + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_in}]
        + ([{"modality": "IMAGE", "tokenCount": image_in}] if image_in else []),
        "candidatesTokensDetails": [
            d
            for d in ({"modality": "IMAGE", "tokenCount": image_out}, {"modality": "TEXT", "tokenCount": text_out})
            if d["tokenCount"]
        ],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def answer(server: FakeGeminiServer, model: str, entry: dict, body: Any, k: int) -> dict:
    if not isinstance(body, dict):
        raise GoogleError(400, "Invalid JSON payload received. Expected an object.")
    for key in body:
        if _camel(key) not in {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools"}:
            raise _unknown(key, "")
    prompt, images = _parts(body, entry["max_images"])
    ratio, _size, modalities = _image_options(body, entry)
    trigger = next((v for word, v in TRIGGERS.items() if word in prompt.lower()), None)
    meta = {"modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
    if trigger == "prompt_blocked":
        return {
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ],
            },
            "usageMetadata": _usage(server, entry, prompt, len(images), 0, 0),
            **meta,
        }
    if trigger in ("IMAGE_SAFETY", "NO_IMAGE"):
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": []},
                    "finishReason": trigger,
                    "index": 0,
                    **({"finishMessage": "Unable to show the generated image."} if trigger == "IMAGE_SAFETY" else {}),
                }
            ],
            "usageMetadata": _usage(server, entry, prompt, len(images), 0, 0),
            **meta,
        }
    if trigger == "text_only":
        text = "I can't edit this image in that way, but I can describe it."
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": _usage(server, entry, prompt, len(images), 0, 14),
            **meta,
        }
    if not images:
        raise GoogleError(400, "This stand-in edits images: send at least one inlineData image part.")
    size = dims_for(ratio) if ratio else dims_for(f"{images[0].width}:{images[0].height}")
    buf = io.BytesIO()
    fmt = "JPEG" if server.output_mime == "image/jpeg" else "PNG"
    _paint(images, size, prompt, k).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    parts: list[dict] = []
    text_out = 0
    if "TEXT" in modalities:
        parts.append({"text": "Here is the edited image."})
        text_out = 7
    parts.append({"inlineData": {"mimeType": server.output_mime, "data": base64.b64encode(buf.getvalue()).decode()}})
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": _usage(server, entry, prompt, len(images), entry["output_image_tokens"], text_out),
        **meta,
    }
