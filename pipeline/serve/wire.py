"""The OpenAI image-edit wire format on the server side, as pure functions (no FastAPI, no I/O).

    InvalidRequest / Outcome  --error_for_*-->   ApiError (status, envelope, x-should-retry, retry-after...)
    EditResult or result.json --images_response--> the `ImagesResponse` JSON the SDK parses
    a partial / the final image --partial_event / completed_event + sse--> `text/event-stream` events

Errors use OpenAI's envelope `{"error": {message, type, param, code}}` and status codes
(https://platform.openai.com/docs/guides/error-codes), so the official SDK raises its own exception types. A
provider's own error (`backends.errors.upstream_of`) is passed on as it sent it: status, body, and the headers a
client acts on (`retry-after`, `retry-after-ms`, `x-ratelimit-*`).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.base import MAX_IMAGE_BYTES, MAX_IMAGES, MAX_PROMPT_CHARS, EditRequest
from backends.errors import InvalidRequest, upstream_of

_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")  # a Python repr that slipped into a message


@dataclass(frozen=True)
class Limits:
    """What one request may carry; checked while the body streams in, before it is all in memory."""

    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_field_bytes: int = 1024  # any text field but the prompt
    max_parts: int = 64
    max_image_pixels: int = 64 * 1024 * 1024  # 8192x8192; above any size an edit model takes or returns

    @property
    def max_prompt_bytes(self) -> int:
        return 4 * self.max_prompt_chars  # UTF-8: at most 4 bytes a character

    @property
    def max_body_bytes(self) -> int:
        """The largest body a valid request can have (all images, a mask and a markup layer at their limit, as
        multipart or as base64 data URLs in JSON)."""
        images = (self.max_images + 2) * (self.max_image_bytes + 1024)
        return images * 4 // 3 + self.max_prompt_bytes + self.max_parts * (self.max_field_bytes + 1024)


@dataclass(eq=False)
class ApiError(Exception):
    """An HTTP error in OpenAI's shape. `should_retry` sets `x-should-retry` (None: let the client decide);
    `body_override` is a provider's own error body, passed on whole; `extra_headers` its rate-limit headers."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    should_retry: bool | None = None
    body_override: Mapping[str, Any] | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        self.message = _REPR.sub("<object>", self.message)
        if self.should_retry is None and self.status < 500 and self.status not in (408, 409, 429):
            self.should_retry = False  # a 400/401/403/404/413 comes back the same however often it is sent

    def body(self) -> dict[str, Any]:
        if self.body_override is not None:
            return dict(self.body_override)
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        out = dict(self.extra_headers)
        if self.should_retry is not None and "x-should-retry" not in out:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        if self.retry_after is not None and "retry-after" not in out:
            out["retry-after"] = str(max(1, round(self.retry_after)))
        return out


@dataclass(frozen=True)
class Upload:
    """One multipart part: a file (has `filename`) or a text field."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


FILE_PARTS = ("image", "image[]", "mask", "markup")  # the multipart parts that carry a file; any other is text


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedRequest:
    request: EditRequest  # images probed (bytes in memory, pixels not decoded); job_id not set yet
    model: str | None  # None: route by the policy
    tags: tuple[str, ...] = ()

    @property
    def stream(self) -> bool:
        return self.request.partial_images is not None


# ---- errors ----------------------------------------------------------------------------------------------

# Fields only some models take: a backend that lacks one refuses the parameter, not a value.
_PARAMETERS_OF_SOME = ("complexity", "markup", "moderation", "stream", "partial_images", "frame_count")


def error_for_invalid(exc: InvalidRequest, *, capability: bool = False, model: str | None = None) -> ApiError:
    """A check that failed before anything ran. `capability`: the request is valid but the backend (or model)
    that must run it cannot; OpenAI says so as `unsupported_parameter` / `unsupported_value`."""
    param = exc.field
    message = exc.message
    if not capability:
        return ApiError(400, message, param=param, code="invalid_value")
    where = f"with {model}" if model else "on this server's backends"
    if param == "input_fidelity" and model:
        return ApiError(
            400,
            f"The model '{model}' does not support the 'input_fidelity' parameter.",
            type="image_generation_user_error",
            param=param,
            code="invalid_input_fidelity_model",
        )
    if param == "stream":
        return ApiError(
            400,
            f"Unsupported value: 'stream' does not support true {where}: it cannot send partial images ({message}).",
            param="stream",
            code="unsupported_value",
        )
    if param in _PARAMETERS_OF_SOME:
        return ApiError(
            400,
            f"Unsupported parameter: '{param}' is not supported {where} ({message}).",
            param=param,
            code="unsupported_parameter",
        )
    return ApiError(400, f"Unsupported value {where}: {message}", param=param, code="unsupported_value")


# error_class (as execute's Outcome names it) -> (status, type, code, should_retry), when no provider answer
_BY_CLASS: dict[str, tuple[int, str, str | None, bool | None]] = {
    "InvalidRequest": (400, "invalid_request_error", "invalid_value", False),
    "ContentRejected": (400, "image_generation_user_error", "moderation_blocked", False),
    "RateLimited": (429, "requests", "rate_limit_exceeded", True),
    "BudgetExceeded": (429, "insufficient_quota", "insufficient_quota", False),
    "BackendMisconfigured": (502, "server_error", "upstream_misconfigured", False),
    "BackendUnavailable": (503, "server_error", "backend_unavailable", True),
    # sent upstream, no answer came (it may have been billed: held as a possible charge); a retry runs it again
    "OutcomeUnknown": (503, "server_error", "backend_unavailable", True),
    "Interrupted": (503, "server_error", "shutting_down", True),
    "Busy": (409, "invalid_request_error", "job_in_progress", True),
}
DEFAULT_RETRY_AFTER_S = 2.0
_OURS_NOT_THEIRS = (401, 403)  # the provider refused *our* key: the server's configuration, not the client's


def error_for_outcome(
    error_class: str | None,
    message: str | None,
    *,
    param: str | None = None,
    budget_held: bool = False,
    detail: BaseException | None = None,
) -> ApiError:
    """A failed job as an HTTP error: the provider's own answer when there is one (`detail`), else ours.
    `budget_held`: the router held the job because a budget is spent."""
    upstream = upstream_of(detail)
    if upstream is not None and upstream.status not in _OURS_NOT_THEIRS:
        return ApiError(
            upstream.status,
            upstream.message,
            type=upstream.type or "invalid_request_error",
            param=upstream.param,
            code=upstream.code,
            body_override=upstream.body,
            extra_headers=dict(upstream.headers),
            should_retry=False if upstream.status == 429 and upstream.code == "insufficient_quota" else None,
        )
    message = getattr(detail, "message", None) or message or "the edit failed"
    if error_class == "Unroutable":
        if budget_held:
            return ApiError(429, message, type="insufficient_quota", code="insufficient_quota", should_retry=False)
        return ApiError(400, message, param=param, code="unsupported_value")
    status, type_, code, retry = _BY_CLASS.get(error_class or "", (500, "server_error", None, None))
    if error_class == "InvalidRequest" and isinstance(detail, InvalidRequest):
        param = detail.field
    retry_after = getattr(detail, "retry_after", None) if error_class == "RateLimited" else None
    if retry_after is None and status in (409, 429, 503) and retry:
        retry_after = DEFAULT_RETRY_AFTER_S
    return ApiError(
        status,
        message,
        type=type_,
        param=param if status == 400 else None,
        code=code,
        retry_after=retry_after,
        should_retry=retry,
    )


# ---- success ---------------------------------------------------------------------------------------------


def usage_json(usage: Mapping[str, Any] | None, provider_usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's `usage`: the provider's own object when it sent one (passed whole: output_tokens_details, cached
    tokens, anything newer), else built from ours."""
    if provider_usage:
        return dict(provider_usage)
    u = usage or {}
    out = {
        "input_tokens": int(u.get("input_tokens") or 0),
        "input_tokens_details": {
            "text_tokens": int(u.get("input_text_tokens") or 0),
            "image_tokens": int(u.get("input_image_tokens") or 0),
        },
        "output_tokens": int(u.get("output_tokens") or 0),
        "total_tokens": int(u.get("total_tokens") or 0),
    }
    if u.get("output_image_tokens") or u.get("output_text_tokens"):
        out["output_tokens_details"] = {
            "image_tokens": int(u.get("output_image_tokens") or 0),
            "text_tokens": int(u.get("output_text_tokens") or 0),
        }
    return out


def effective_safety_identifier(request: EditRequest) -> str | None:
    """OpenAI's rule: a non-empty `safety_identifier`, else the deprecated `user`."""
    return request.safety_identifier or request.user or None


def answer_fields(record: Mapping[str, Any], request: EditRequest | None = None) -> dict[str, Any]:
    """What `ImagesResponse` and the completed event share: background, format, quality, size, usage."""
    extras = record.get("extras") or {}
    out = {
        "background": record.get("background") or "opaque",
        "output_format": record.get("output_format") or "png",
        "quality": record.get("quality") or "auto",
        "size": record.get("size"),
        "usage": usage_json(record.get("usage"), extras.get("openai_usage")),
    }
    if request is not None and (sid := effective_safety_identifier(request)):
        out["safety_identifier"] = sid
    return out


ImageData = bytes | str | memoryview  # the image's bytes; or its base64 as the provider sent it (text, or a view)


def b64(image: ImageData) -> bytes | memoryview:
    """An image as base64 bytes: bytes are encoded; base64 from the provider is passed on as it is."""
    if isinstance(image, str):
        return image.encode("ascii")
    return image if isinstance(image, memoryview) else base64.b64encode(image)


def b64_text(image: ImageData) -> str:
    out = b64(image)
    return out.decode("ascii") if isinstance(out, bytes) else bytes(out).decode("ascii")


def images_response(
    record: Mapping[str, Any],
    images: Sequence[ImageData],
    created: int | None = None,
    request: EditRequest | None = None,
) -> bytes:
    """`ImagesResponse` as JSON bytes, from a job's record (result.json's fields) and its images (bytes, or the
    provider's base64 text, passed on without decoding and re-encoding). The base64 goes into the JSON as is (it
    needs no escaping), in one join: no megabyte-sized string is scanned by json.dumps or copied twice."""
    head = json.dumps({"created": int(time.time()) if created is None else created})[:-1].encode()
    tail = json.dumps(answer_fields(record, request))[1:].encode()
    parts = [head, b',"data":[']
    for i, img in enumerate(images):
        parts += [b"," if i else b"", b'{"b64_json":"', b64(img), b'"}']
    parts += [b"],", tail]
    return b"".join(parts)


def partial_event(
    data: ImageData, index: int, record: Mapping[str, Any], created_at: int | None = None
) -> dict[str, Any]:
    """`image_edit.partial_image` (the SDK's `ImageEditPartialImageEvent`); `data` bytes or base64 text."""
    return {
        "type": "image_edit.partial_image",
        "b64_json": b64_text(data),
        "created_at": int(time.time()) if created_at is None else created_at,
        "partial_image_index": index,
        "background": record.get("background") or "auto",
        "output_format": record.get("output_format") or "png",
        "quality": record.get("quality") or "auto",
        "size": record.get("size") or "auto",
    }


def completed_event(
    image: ImageData, record: Mapping[str, Any], request: EditRequest | None = None, created_at: int | None = None
) -> dict[str, Any]:
    """`image_edit.completed` (the SDK's `ImageEditCompletedEvent`), with `usage`; `image` bytes or base64 text."""
    return {
        "type": "image_edit.completed",
        "b64_json": b64_text(image),
        "created_at": int(time.time()) if created_at is None else created_at,
        **answer_fields(record, request),
    }


def sse(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event: `event: <type>` and its JSON `data:` line (an error event is `event: error`)."""
    name = payload.get("type") or ("error" if "error" in payload else "message")
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def models_list(entries: Sequence[tuple[str, str]], created: int = 0) -> dict[str, Any]:
    """OpenAI's `GET /v1/models` list: `entries` are (id, owned_by)."""
    return {
        "object": "list",
        "data": [{"id": mid, "object": "model", "created": created, "owned_by": owner} for mid, owner in entries],
    }
