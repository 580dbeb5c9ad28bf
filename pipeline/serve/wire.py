"""The OpenAI image-edit wire format on the server side, as pure functions (no FastAPI, no I/O).

    form (fields + file parts) --parse_form--> ParsedForm (EditRequest, model, tags)
    Outcome / EditError        --error_for_*--> ApiError (status, envelope, x-should-retry, retry-after)
    result.json + image bytes  --images_response--> the `ImagesResponse` JSON the SDK parses

Errors use OpenAI's envelope `{"error": {message, type, param, code}}` and status codes
(https://platform.openai.com/docs/guides/error-codes), so the
official SDK raises its own exception types (`BadRequestError`, `AuthenticationError`, `RateLimitError`...).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.base import MAX_IMAGE_BYTES, MAX_IMAGES, MAX_PROMPT_CHARS, EditRequest
from backends.errors import InvalidRequest
from backends.images import InputImage
from backends.validation import request_problems

TEXT_FIELDS = (
    "prompt",
    "model",
    "n",
    "size",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "user",
    "stream",
    "partial_images",
)
EXTENSION_FIELDS = ("seed", "tags")  # editroute's own, sent with the SDK's `extra_body`
FILE_FIELDS = ("image", "image[]", "mask")
KNOWN_FIELDS = (*TEXT_FIELDS, *EXTENSION_FIELDS, *FILE_FIELDS, "tags[]", "response_format")  # others: unknown_parameter
AUTO_MODELS = ("", "auto")
_MIMES_OK = ("image/png", "image/jpeg", "image/jpg", "image/webp")
_MIMES_SNIFFED = ("", "application/octet-stream")  # no useful type given: the bytes decide


@dataclass(frozen=True)
class Limits:
    """What one request may carry; checked while the body streams in, before it is all in memory."""

    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_field_bytes: int = 1024  # any text field but the prompt
    max_parts: int = 64

    @property
    def max_prompt_bytes(self) -> int:
        return 4 * self.max_prompt_chars  # UTF-8: at most 4 bytes a character

    @property
    def max_body_bytes(self) -> int:
        """The largest body a valid request can have (all images and a mask at their limit, multipart overhead)."""
        return (
            (self.max_images + 1) * (self.max_image_bytes + 1024)
            + self.max_prompt_bytes
            + self.max_parts * (self.max_field_bytes + 1024)
        )


@dataclass(eq=False)
class ApiError(Exception):
    """An HTTP error in OpenAI's shape. `should_retry` sets `x-should-retry` (None: let the client decide)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    should_retry: bool | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.should_retry is None and self.status < 500 and self.status not in (408, 409, 429):
            self.should_retry = False  # a 400/401/403/404/413 comes back the same however often it is sent

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        out = {}
        if self.should_retry is not None:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        if self.retry_after is not None:
            out["retry-after"] = str(max(1, round(self.retry_after)))
        return out


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Upload:
    """One multipart part: a file (has `filename`) or a text field."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedForm:
    request: EditRequest  # images decoded (bytes in memory); job_id not set yet
    model: str | None  # None: route by the policy
    tags: tuple[str, ...] = ()


def _one(form: Form, name: str) -> str | None:
    values = form.fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"Duplicate parameter: '{name}'. Send it once.", param=name, code="duplicate_parameter")
    return values[0]


def _int(form: Form, name: str) -> int | None:
    text = _one(form, name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise bad_request(
            f"Invalid value for '{name}': expected an integer, but got {text[:40]!r} instead.", name, "invalid_type"
        ) from None


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _flag(form: Form, name: str) -> bool:
    text = (_one(form, name) or "").strip().lower()
    if text in ("", "false", "0", "none", "null"):
        return False
    if text in ("true", "1"):
        return True
    raise bad_request(
        f"Invalid value for '{name}': expected a boolean, but got {text[:40]!r} instead.", name, "invalid_type"
    )


def _check_mime(part: Upload, param: str) -> None:
    mime = (part.content_type or "").split(";")[0].strip().lower()
    if mime not in _MIMES_OK and mime not in _MIMES_SNIFFED:
        raise ApiError(
            400,
            f"Invalid file '{param}': unsupported mimetype ('{mime}'). Supported file formats are "
            "'image/jpeg', 'image/png', and 'image/webp'.",
            param=param,
            code="unsupported_file_mimetype",
        )


def _decode(part: Upload, param: str) -> InputImage:
    _check_mime(part, param)
    try:
        return InputImage.from_bytes(part.data, name=part.filename or param, field=param)
    except InvalidRequest as exc:
        raise ApiError(400, exc.message, param=param, code="invalid_image_file") from None


def parse_form(form: Form) -> ParsedForm:
    """The OpenAI edit form -> an EditRequest, or the first problem as OpenAI would report it."""
    unknown = [n for n in form.fields if n not in KNOWN_FIELDS]
    unknown += [f.name for f in form.files if f.name not in FILE_FIELDS]
    if unknown:
        raise ApiError(400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    if "response_format" in form.fields:  # dall-e-2 only; GPT image models refuse it and always return b64_json
        raise ApiError(400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
    text_parts = [f.name for f in form.files if f.name in TEXT_FIELDS]
    if text_parts:
        raise bad_request(
            f"Invalid type for '{text_parts[0]}': expected a string, but got a file instead.",
            text_parts[0],
            "invalid_type",
        )
    if _flag(form, "stream"):
        raise bad_request("Streaming is not supported by this server; omit 'stream'.", "stream", "unsupported_value")
    if _int(form, "partial_images"):
        raise bad_request(
            "'partial_images' needs streaming, which this server does not support.",
            "partial_images",
            "unsupported_value",
        )

    singles = [f for f in form.files if f.name == "image"]
    arrays = [f for f in form.files if f.name == "image[]"]
    if len(singles) > 1 or (singles and arrays):
        raise ApiError(
            400,
            "Duplicate parameter: 'image'. To send several images use the array syntax, e.g. 'image[]=<value>'.",
            param="image",
            code="duplicate_parameter",
        )
    for name in ("image", "image[]", "mask"):
        if name in form.fields:
            raise bad_request(
                f"Invalid type for '{name.rstrip('[]')}': expected a file, but got a string instead.",
                name.rstrip("[]"),
                "invalid_type",
            )
    parts = singles or arrays
    if not parts:
        raise bad_request("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(parts) > MAX_IMAGES:
        raise bad_request(f"Too many images: {len(parts)} given, at most {MAX_IMAGES}.", "image", "invalid_value")
    masks = [f for f in form.files if f.name == "mask"]
    if len(masks) > 1:
        raise ApiError(400, "Duplicate parameter: 'mask'.", param="mask", code="duplicate_parameter")
    prompt = _one(form, "prompt")
    if prompt is None:
        raise bad_request("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")

    images = tuple(_decode(p, "image" if singles else f"image[{i}]") for i, p in enumerate(parts))
    mask = _decode(masks[0], "mask") if masks else None
    tags = [t.strip() for v in (*form.fields.get("tags", ()), *form.fields.get("tags[]", ())) for t in v.split(",")]
    request = EditRequest(
        prompt=prompt,
        images=images,
        mask=mask,
        size=_one(form, "size") or "auto",
        quality=_one(form, "quality") or "auto",
        n=_default(_int(form, "n"), 1),
        output_format=_one(form, "output_format") or "png",
        output_compression=_int(form, "output_compression"),
        background=_one(form, "background") or "auto",
        input_fidelity=_one(form, "input_fidelity") or None,
        user=_one(form, "user") or None,
        seed=_int(form, "seed"),
    )
    problems = request_problems(request)
    if problems:
        raise error_for_invalid(problems[0], others=problems[1:])
    model = (_one(form, "model") or "").strip()
    return ParsedForm(request=request, model=None if model in AUTO_MODELS else model, tags=tuple(t for t in tags if t))


# ---- errors ----------------------------------------------------------------------------------------------


def error_for_invalid(exc: InvalidRequest, others: Sequence[InvalidRequest] = ()) -> ApiError:
    message = "; ".join(p.message for p in (exc, *others))
    return ApiError(400, message, param=exc.field, code="invalid_value")


# error_class (as execute's Outcome names it) -> (status, type, code, should_retry)
_BY_CLASS: dict[str, tuple[int, str, str | None, bool | None]] = {
    "InvalidRequest": (400, "invalid_request_error", "invalid_value", False),
    "ContentRejected": (400, "image_generation_user_error", "moderation_blocked", False),
    "RateLimited": (429, "requests", "rate_limit_exceeded", True),
    "BudgetExceeded": (429, "insufficient_quota", "insufficient_quota", False),
    "BackendMisconfigured": (502, "server_error", "upstream_misconfigured", False),
    "BackendUnavailable": (503, "server_error", "backend_unavailable", True),
    "Interrupted": (503, "server_error", "shutting_down", True),
    "Busy": (409, "invalid_request_error", "job_in_progress", True),
}
DEFAULT_RETRY_AFTER_S = 2.0


def error_for_outcome(
    error_class: str | None, message: str | None, *, param: str | None = None, budget_held: bool = False
) -> ApiError:
    """A failed job as an HTTP error. `budget_held`: the router held the job because a budget is spent."""
    message = message or "the edit failed"
    if error_class == "Unroutable":
        if budget_held:
            return ApiError(429, message, type="insufficient_quota", code="insufficient_quota", should_retry=False)
        return ApiError(400, message, param=param, code="unsupported_request")
    status, type_, code, retry = _BY_CLASS.get(error_class or "", (500, "server_error", None, None))
    retry_after = DEFAULT_RETRY_AFTER_S if status in (409, 429, 503) and retry else None
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


def usage_json(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    u = usage or {}
    return {
        "input_tokens": int(u.get("input_tokens") or 0),
        "input_tokens_details": {
            "text_tokens": int(u.get("input_text_tokens") or 0),
            "image_tokens": int(u.get("input_image_tokens") or 0),
        },
        "output_tokens": int(u.get("output_tokens") or 0),
        "total_tokens": int(u.get("total_tokens") or 0),
    }


def images_response(record: Mapping[str, Any], images: Sequence[bytes], created: int | None = None) -> dict[str, Any]:
    """`ImagesResponse` from a job's result.json record and its output files' bytes."""
    return {
        "created": int(time.time()) if created is None else created,
        "data": [{"b64_json": base64.b64encode(data).decode("ascii")} for data in images],
        "background": record.get("background") or "opaque",
        "output_format": record.get("output_format") or "png",
        "quality": record.get("quality") or "auto",
        "size": record.get("size"),
        "usage": usage_json(record.get("usage")),
    }


def models_list(entries: Sequence[tuple[str, str]], created: int = 0) -> dict[str, Any]:
    """OpenAI's `GET /v1/models` list: `entries` are (id, owned_by)."""
    return {
        "object": "list",
        "data": [{"id": mid, "object": "model", "created": created, "owned_by": owner} for mid, owner in entries],
    }
