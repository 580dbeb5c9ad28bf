"""Gemini `POST /{version}/models/{model}:generateContent` on the wire, as pure functions.

No I/O here: `backends.google.backend` does the HTTP. These decide the request body, read the answer (image,
text, usage, safety verdicts) and classify failures into `backends.errors` (`map_status_error` is the one
translation point for HTTP errors; httpx's own go through `backends.hosted_http.map_transport_error`).

Image options go in `generationConfig.imageConfig`, as Google's own SDK (google-genai 3.6, `_ImageConfig_to_mldev`)
still sends them; Google's Sept-2026 guide shows `generationConfig.responseFormat.image` instead. Which one the
live API prefers is not published, so the field is a setting (`image_config_field`) and the stand-in takes both.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import Usage
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    EditError,
    InvalidRequest,
    RateLimited,
)
from backends.google.models import TokenCounts
from backends.hosted_http import MAX_RETRY_AFTER, parse_retry_after

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # google-genai's HttpRetryOptions defaults
# finishReason values that mean "no image, by the provider's choice" (google-genai types.FinishReason)
REFUSALS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "MODEL_ARMOR",
        "LANGUAGE",
    }
)
_KEYLIKE = re.compile(r"AIza[0-9A-Za-z_\-]{8,}")


# ---- request ----------------------------------------------------------------------------------------


def ratio_value(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return int(w) / int(h)


def choose_aspect_ratio(width: int, height: int, ratios: Sequence[str]) -> str:
    """The model's ratio nearest `width:height` (log distance, so 2:1 and 1:2 are equally far from 1:1)."""
    target = math.log(width / height)
    return min(ratios, key=lambda r: round(abs(math.log(ratio_value(r)) - target), 9))


def build_body(
    prompt: str,
    images: Sequence[tuple[str, bytes]],
    *,
    aspect_ratio: str | None,
    image_size: str | None,
    image_config_field: str = "imageConfig",
    modalities: Sequence[str] = ("IMAGE",),
) -> dict[str, Any]:
    """The JSON body: the instruction first, then each image inline (base64) in order, as Google's guide does."""
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [
        {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode("ascii")}} for mime, data in images
    ]
    config: dict[str, Any] = {"responseModalities": list(modalities)}
    image_cfg = {k: v for k, v in (("aspectRatio", aspect_ratio), ("imageSize", image_size)) if v}
    if image_cfg:
        if image_config_field == "imageConfig":
            config["imageConfig"] = image_cfg
        else:
            config["responseFormat"] = {"image": image_cfg}
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


# ---- response ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    image: bytes
    mime: str
    text: str  # any text the model sent beside the image
    tokens: TokenCounts
    usage: Usage
    finish_reason: str | None
    model_version: str | None
    response_id: str | None


def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    return d.get(camel, d.get(snake))


def parse_usage(raw: Any) -> tuple[TokenCounts, Usage]:
    """`usageMetadata` -> billed tokens. Without per-modality details, input counts as image input and output
    as image output (in prices.yaml the image rates are the higher or equal ones: never under-billed)."""
    raw = raw if isinstance(raw, Mapping) else {}

    def by_modality(details: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in details or ():
            if isinstance(d, Mapping):
                out[str(d.get("modality"))] = out.get(str(d.get("modality")), 0) + int(d.get("tokenCount") or 0)
        return out

    prompt = int(_get(raw, "promptTokenCount", "prompt_token_count") or 0)
    cands = int(_get(raw, "candidatesTokenCount", "candidates_token_count") or 0)
    thoughts = int(_get(raw, "thoughtsTokenCount", "thoughts_token_count") or 0)
    p = by_modality(_get(raw, "promptTokensDetails", "prompt_tokens_details"))
    c = by_modality(_get(raw, "candidatesTokensDetails", "candidates_tokens_details"))
    text_in = p.get("TEXT", 0) if p else 0
    image_in = prompt - text_in if p else prompt
    image_out = c.get("IMAGE", 0) if c else cands
    tokens = TokenCounts(
        text_in=text_in, image_in=image_in, image_out=image_out, text_out=(cands - image_out) + thoughts
    )
    total = int(_get(raw, "totalTokenCount", "total_token_count") or prompt + cands + thoughts)
    return tokens, Usage(
        input_tokens=prompt,
        input_text_tokens=text_in,
        input_image_tokens=image_in,
        output_tokens=cands + thoughts,
        total_tokens=total,
    )


def parse_response(body: Any) -> Answer:
    """The last non-thought image of the first candidate, or the reason there is none."""
    if not isinstance(body, Mapping):
        raise BackendUnavailable("the server answered 200 with a body that is not a JSON object")
    tokens, usage = parse_usage(_get(body, "usageMetadata", "usage_metadata"))
    feedback = _get(body, "promptFeedback", "prompt_feedback") or {}
    if block := _get(feedback, "blockReason", "block_reason"):
        why = _get(feedback, "blockReasonMessage", "block_reason_message")
        raise ContentRejected(
            f"the prompt was blocked by Google's safety filters (blockReason {block}"
            + (f": {why}" if why else "")
            + ")"
        )
    candidates = body.get("candidates") or []
    if not candidates or not isinstance(candidates[0], Mapping):
        raise BackendUnavailable("the server answered 200 with no candidates and no block reason")
    cand = candidates[0]
    reason = _get(cand, "finishReason", "finish_reason")
    parts = [
        p for p in ((cand.get("content") or {}).get("parts") or []) if isinstance(p, Mapping) and not p.get("thought")
    ]  # 3.x models think in interim images: skip those
    images = [_get(p, "inlineData", "inline_data") for p in parts if _get(p, "inlineData", "inline_data")]
    text = " ".join(str(p["text"]) for p in parts if isinstance(p.get("text"), str)).strip()
    if not images:
        message = _get(cand, "finishMessage", "finish_message")
        detail = f"finishReason {reason or 'none'}" + (f": {message}" if message else "")
        if reason in REFUSALS:
            raise ContentRejected(f"no image: refused by Google's safety system ({detail})")
        if text:
            raise ContentRejected(f"no image: the model answered with text only ({detail}): {text[:300]!r}")
        if reason in (None, "STOP"):
            raise ContentRejected(f"no image and no text ({detail})")
        raise BackendUnavailable(f"the model stopped without an image ({detail})")
    last = images[-1]
    try:
        raw = str(last.get("data") or "")  # protobuf JSON: standard or URL-safe base64
        data = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise BackendUnavailable("inlineData.data is not valid base64") from None
    if not data:
        raise BackendUnavailable("inlineData.data is empty")
    return Answer(
        image=data,
        mime=str(_get(last, "mimeType", "mime_type") or ""),
        text=text,
        tokens=tokens,
        usage=usage,
        finish_reason=reason,
        model_version=_get(body, "modelVersion", "model_version"),
        response_id=_get(body, "responseId", "response_id"),
    )


# ---- errors and retries -----------------------------------------------------------------------------


def scrub(text: str, secret: str | None = None) -> str:
    """Remove the key (Google's DebugInfo can echo it: 'Invalid API key: ...') and anything key-shaped."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("AIza***", text)


def _error(body: Any) -> tuple[str, str | None, list[Mapping[str, Any]]]:
    """(message, status, details) from Google's envelope {"error": {code, message, status, details}}."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        details = [d for d in err.get("details") or [] if isinstance(d, Mapping)]
        return str(err.get("message") or ""), err.get("status"), details
    return (str(body)[:300] if body else ""), None, []


def _detail(details: list[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    return next((d for d in details if str(d.get("@type", "")).endswith(kind)), {})


def _duration(raw: Any) -> float | None:
    """A protobuf Duration in JSON ("28s", "1.500s") as seconds."""
    if isinstance(raw, str) and raw.endswith("s"):
        try:
            return max(0.0, float(raw[:-1]))
        except ValueError:
            return None
    return None


def retry_delay(body: Any, headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `google.rpc.RetryInfo.retryDelay`, else a `Retry-After` header."""
    wait = _duration(_detail(_error(body)[2], "google.rpc.RetryInfo").get("retryDelay"))
    return wait if wait is not None else parse_retry_after(headers.get("retry-after"))


def should_retry(status: int, headers: Mapping[str, str], body: Any) -> bool:
    wait = retry_delay(body, headers)
    return status in RETRY_STATUSES and (wait is None or wait <= MAX_RETRY_AFTER) and not _no_quota(body)


def _no_quota(body: Any) -> bool:
    """A 429 whose quota is zero (no billing on the key's project): waiting will not help."""
    message, status, _ = _error(body)
    return status == "RESOURCE_EXHAUSTED" and "limit: 0" in message


def map_status_error(
    status: int, headers: Mapping[str, str], body: Any, *, model: str, key_source: str, secret: str | None = None
) -> EditError:
    """An HTTP error response -> the `backends.errors` class the router acts on."""
    message, gstatus, details = _error(body)
    reason = _detail(details, "google.rpc.ErrorInfo").get("reason")
    detail = (
        f"{scrub(message, secret)} (HTTP {status}"
        + (f", {gstatus}" if gstatus else "")
        + (f", {reason}" if reason else "")
        + ")"
    )
    if status == 401 or gstatus == "UNAUTHENTICATED" or reason in ("API_KEY_INVALID", "API_KEY_EXPIRED"):
        return BackendMisconfigured(f"the API key from {key_source} was rejected: {detail}")
    if status == 403 or gstatus == "PERMISSION_DENIED":
        return BackendMisconfigured(f"access denied with the key from {key_source}: {detail}")
    if status == 404 or gstatus == "NOT_FOUND":
        return BackendMisconfigured(f"model {model!r} not found: retired or misspelt? {detail}")
    if status == 429:
        if _no_quota(body):
            return BackendMisconfigured(
                f"no quota for {model!r} on the project of the key from {key_source} "
                f"(image models have no free tier; is billing enabled?): {detail}"
            )
        return RateLimited(f"rate limited: {detail}", retry_after=retry_delay(body, headers))
    if gstatus == "FAILED_PRECONDITION":  # e.g. "User location is not supported for the API use."
        return BackendMisconfigured(f"the API refused this project or region: {detail}")
    if 400 <= status < 500 and status != 408:
        return InvalidRequest(f"the API refused the request: {detail}")
    return BackendUnavailable(f"server error: {detail}")
