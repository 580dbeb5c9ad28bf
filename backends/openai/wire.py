"""OpenAI `POST /images/edits` on the wire, as pure functions: request parts, retries, error mapping.

No I/O here: `backend.py` does the HTTP, these functions decide what to send, what to retry and which
`backends.errors` class a failure becomes (`map_status_error`, `map_transport_error`); what came back is read by
`backends.openai.response`.

Two encodings of the same edit (https://developers.openai.com/api/reference/resources/images/methods/edit):
multipart (`form_fields` + `file_parts`: the bytes of local files, as OpenAI's SDK sends them) and JSON
(`json_body`: `images: [{file_id} | {image_url}]`, local bytes as data URLs), chosen by `encoding_for`: JSON when
an input is a remote reference or `moderation` is set (only the JSON schema has that field). `json_body` is also
what a Batch API line carries as its `body`.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Mapping
from typing import Any

from backends import hosted_http
from backends.base import EditRequest
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    EditError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
)
from backends.images import InputImage

RETRY_STATUSES = frozenset({408, 409, 429})
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = hosted_http.MAX_RETRY_AFTER  # a longer server-requested wait is not slept through
_MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_MODEL_GONE_CODES = frozenset({"model_not_found"})
MAX_IMAGE_URL_CHARS = 20_971_520  # JSON `image_url` maxLength (a URL or a base64 data URL)
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_*.\-]{3,})")

Part = tuple[str, tuple[str, bytes, str]]  # (field name, (filename, content, content type)) as httpx takes it


# ---- request ----------------------------------------------------------------------------------------


def encoding_for(request: EditRequest) -> str:
    """ "json" when an input is a file id or URL, or `moderation` is set (a field of the JSON schema only);
    else "multipart", the bytes of local files as OpenAI's SDK sends them."""
    return "json" if request.has_remote_refs or request.moderation is not None else "multipart"


def _options(request: EditRequest, *, takes_input_fidelity: bool) -> dict[str, Any]:
    """The fields both encodings share, typed. Never `response_format` (a 400 for GPT image models);
    `output_compression` only with jpeg/webp; `input_fidelity` only for models that take it (2.x: never)."""
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "n": request.n,
        "size": request.size,
        "quality": request.quality,
        "output_format": request.output_format,
        "background": request.background,
    }
    if request.output_compression is not None and request.output_format in ("jpeg", "webp"):
        fields["output_compression"] = request.output_compression
    if request.input_fidelity is not None and takes_input_fidelity:
        fields["input_fidelity"] = request.input_fidelity
    for name in ("complexity", "safety_identifier", "frame_count", "frame_duration_ms", "user"):
        value = getattr(request, name)
        if value is not None and value != "":
            fields[name] = value
    if request.partial_images is not None:  # a streamed edit: server-sent events (backends.openai.stream)
        fields["stream"] = True
        fields["partial_images"] = request.partial_images
    return fields


def form_fields(request: EditRequest, model: str, *, takes_input_fidelity: bool) -> dict[str, str]:
    """The multipart text fields the chosen model accepts (numbers as text, as a form carries them)."""
    return {"model": model} | {
        k: _form_text(v) for k, v in _options(request, takes_input_fidelity=takes_input_fidelity).items()
    }


def _form_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)  # as the SDK writes booleans


def file_parts(request: EditRequest) -> list[Part]:
    """Scalar `image` for one file, one `image[]` part per file for several (a repeated `image` is rejected
    as `duplicate_parameter`), then `mask`, then `markup`; each part carries the image's real Content-Type."""
    name = "image" if len(request.images) == 1 else "image[]"
    parts: list[Part] = [(name, (img.name, img.read(), img.mime)) for img in request.images]
    for field in ("mask", "markup"):
        layer = getattr(request, field)
        if layer is not None:
            parts.append((field, (layer.name, layer.read(), layer.mime)))
    return parts


def image_ref(img: InputImage) -> dict[str, str]:
    """One image in a JSON body: `{file_id}`, `{image_url: https://...}`, or local bytes as a base64 data URL."""
    if img.file_id is not None:
        return {"file_id": img.file_id}
    if img.url is not None:
        return {"image_url": img.url}
    return {"image_url": f"data:{img.mime};base64,{base64.b64encode(img.read()).decode('ascii')}"}


def data_url_chars(img: InputImage) -> int:
    """How long a local image's data URL will be (without encoding it)."""
    return 0 if img.is_remote else len(f"data:{img.mime};base64,") + 4 * ((img.nbytes + 2) // 3)


def json_body(request: EditRequest, model: str, *, takes_input_fidelity: bool) -> dict[str, Any]:
    """The JSON edit body: `images` as references, `mask`/`markup` likewise, and every option the model takes.
    A pure function of the request, so the Batch API lane can put it in a JSONL line as it is."""
    body: dict[str, Any] = {"model": model, "images": [image_ref(img) for img in request.images]}
    if request.mask is not None:
        body["mask"] = image_ref(request.mask)
    if request.markup is not None:
        body["markup"] = image_ref(request.markup)
    body.update(_options(request, takes_input_fidelity=takes_input_fidelity))
    if request.moderation is not None:
        body["moderation"] = request.moderation
    return body


# ---- retries ----------------------------------------------------------------------------------------


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    return hosted_http.parse_retry_after(headers.get("retry-after"))


def should_retry(status: int, headers: Mapping[str, str], body: Any = None) -> bool:
    """The OpenAI SDK's rule: 408/409/429/>=500 (but not an exhausted quota, nor a wait above 120 s)."""
    wait = retry_after(headers)
    if wait is not None and wait > MAX_RETRY_AFTER:
        return False
    hint = headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    if status == 429 and _error_fields(body)[3] == "insufficient_quota":
        return False
    return status in RETRY_STATUSES or status >= 500


def backoff_delay(attempt: int, headers: Mapping[str, str] | None = None, *, rand=random.random) -> float:
    """Seconds before retry number `attempt` (0-based): the server's wait if it gave one (<= 120 s), else
    0.5 s doubling to 8 s, minus up to 25 % jitter (the shared rule, at the OpenAI SDK's initial delay)."""
    wait = retry_after(headers or {})
    return hosted_http.backoff_delay(attempt, wait, initial=INITIAL_RETRY_DELAY, cap=MAX_RETRY_DELAY, rand=rand)


# ---- errors: the one translation point --------------------------------------------------------------


def scrub(text: str, secret: str | None = None) -> str:
    """Remove the key (and anything key-shaped, e.g. OpenAI's 'Incorrect API key provided: sk-ab***yz')."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("sk-***", text)


def _error_fields(body: Any) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, param, code) from an OpenAI error envelope, or from whatever the server sent."""
    err = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        return (str(err.get("message") or ""), err.get("type"), err.get("param"), err.get("code"))
    if isinstance(err, str):
        return err, None, None, None
    return (str(body)[:300] if body else ""), None, None, None


FORWARDED_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")  # and every x-ratelimit-* header


def upstream_error(status: int, headers: Mapping[str, str], body: Any, secret: str | None = None) -> UpstreamError:
    """The provider's error answer as it sent it (the message scrubbed of keys), for a server to pass on."""
    message, etype, param, code = _error_fields(body)
    message = scrub(message, secret)
    whole: dict[str, Any] = dict(body) if isinstance(body, Mapping) else {}
    err = whole.get("error")
    if isinstance(err, Mapping):
        whole["error"] = {**err, "message": message}
    else:
        whole = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    kept = {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in FORWARDED_HEADERS or k.lower().startswith("x-ratelimit-")
    }
    return UpstreamError(
        status=status,
        message=message,
        type=etype if isinstance(etype, str) else None,
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
        body=whole,
        headers=kept,
    )


def map_status_error(
    status: int, headers: Mapping[str, str], body: Any, *, key_source: str, secret: str | None = None
) -> EditError:
    """An HTTP error response -> the `backends.errors` class the router acts on, with the provider's own answer
    attached (`backends.errors.upstream_of`)."""
    err = _classify(status, headers, body, key_source=key_source, secret=secret)
    err.upstream = upstream_error(status, headers, body, secret)  # type: ignore[attr-defined]
    return err


def _classify(
    status: int, headers: Mapping[str, str], body: Any, *, key_source: str, secret: str | None = None
) -> EditError:
    message, etype, param, code = _error_fields(body)
    message = scrub(message, secret)
    detail = f"{message} (HTTP {status}" + (f", code {code}" if code else "") + (f", param {param}" if param else "")
    detail += ")"
    if status == 401:  # OpenAI echoes part of the key in this message: never pass it on
        return BackendMisconfigured(
            f"the API key from {key_source} was rejected (HTTP 401); check it is "
            f"valid for this base_url and organisation"
        )
    if status == 403:
        return BackendMisconfigured(f"access denied with the key from {key_source}: {detail}")
    if code in _MODEL_GONE_CODES:  # 404 or 400: retired, misspelt or not enabled for this key; never retried
        return BackendMisconfigured(
            f"the API does not know this model (retired, misspelt, or not enabled for the key from {key_source}); "
            f"check its status in prices.yaml or with `editroute doctor --policy`: {detail}"
        )
    if status == 404:
        return BackendMisconfigured(f"not found: wrong base_url or model? {detail}")
    if status == 429:
        if code == "insufficient_quota":
            return BackendMisconfigured(f"quota exhausted for the key from {key_source}: {detail}")
        return RateLimited(f"rate limited: {detail}", retry_after=retry_after(headers))
    if code in _MODERATION_CODES or (
        etype == "image_generation_user_error" and not (code or "").endswith(("image_file", "mimetype"))
    ):
        return ContentRejected(f"refused by the provider's safety system: {detail}")
    if 400 <= status < 500 and status not in RETRY_STATUSES:
        return InvalidRequest(f"the API refused the request: {detail}", field=param, value=None, limit=None)
    return BackendUnavailable(f"server error: {detail}")


# httpx's exceptions: the rule every hosted backend shares (bad URLs are configuration; a request that went out
# and got no answer is `OutcomeUnknown`, a possible charge). (`httpx.InvalidURL`: in the backend's `_post`.)
map_transport_error = hosted_http.map_transport_error
is_retryable_transport_error = hosted_http.is_retryable_transport_error
