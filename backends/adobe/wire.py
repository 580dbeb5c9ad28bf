"""Adobe Firefly Services on the wire (OpenAPI `firefly-api.json` 3.0.0), as pure functions.

Request bodies for `POST /v3/images/fill-async` (FillImageRequestV3), `/v3/images/expand-async`
(ExpandImageRequestV3) and the Image 5 instruct edit `POST /v4/images/generate-async` (ImageGenerateRequestV3 with
one `referenceBlobs` entry); the accept answers (v3: 202 `{jobId, statusUrl, cancelUrl}`; v4: 200
`{links: {result: {href}}}`); job states from `GET /v3/status/{jobId}`; and the one translation of HTTP errors
into `backends.errors` (`map_status_error`).
Spec: https://github.com/AdobeDocs/ffs-firefly-api (static/firefly-api.json)
Masks: "Black areas are protected ... White areas are exposed. Requested edits will apply only to these regions"
(https://developer.adobe.com/firefly-services/docs/firefly-api/guides/concepts/masking/), the opposite of OpenAI's
alpha-0-means-edit: `letterbox()` takes the repaint mask already converted (white = edit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    EditError,
    InvalidRequest,
    OutcomeUnknown,
    RateLimited,
)
from backends.hosted_http import MAX_RETRY_AFTER, parse_retry_after

# FillImageRequestV3.size: "The supported sizes for the output images are: ..."
FILL_SIZES = (
    (2048, 2048),
    (1024, 1024),
    (2304, 1792),
    (1792, 2304),
    (2688, 1536),
    (1344, 768),
    (1152, 896),
    (896, 1152),
)
MAX_EXPAND_SIDE = 3999
MAX_VARIATIONS = 4  # numVariations on fill/expand; Image 5 takes 1
MAX_PROMPT = {"fill": 1024, "expand": 1024, "instruct": 1500}
UPLOAD_LIMIT = 15 * 1024 * 1024  # "The maximum file size supported for uploading an image is 15MB"
REFERENCE_AREA = (512 * 512, 2048 * 2048)  # Image 5 reference: area between 512x512 and 2048x2048
RESOLUTION_LEVELS = (("1MP", 1.0), ("2.4MP", 2.4), ("4MP", 4.0))  # in 1024x1024 units
PAD = (127, 127, 127)
CONTENT_CODES = frozenset(
    {
        "legal_error",
        "prompt_unsafe",
        "prompt_entity_denied",
        "image_unsafe",
        "video_unsafe",
        "reference_image_unsafe_error",
        "input_media_unsafe",
        "output_media_unsafe",
    }
)


# ---- geometry ---------------------------------------------------------------------------------------


def nearest_fill_size(width: int, height: int) -> tuple[int, int]:
    """The listed size nearest in aspect ratio, then in area; a tie goes to the squarer one (1536x1024 and
    1024x1536 get the mirror images 1152x896 and 896x1152)."""

    def key(s: tuple[int, int]) -> tuple[float, float, int]:
        return (
            round(abs(math.log((s[0] / s[1]) / (width / height))), 9),
            round(abs(math.log(s[0] * s[1] / (width * height))), 9),
            -min(s),
        )

    return min(FILL_SIZES, key=key)


def resolution_level(width: int, height: int) -> str:
    """The smallest Image 5 level that is not smaller than the output (we scale down, never up)."""
    mp = width * height / (1024 * 1024)
    return next((name for name, level in RESOLUTION_LEVELS if level >= mp), RESOLUTION_LEVELS[-1][0])


def reference_size(width: int, height: int) -> tuple[int, int]:
    """`width x height` scaled (if needed) so that its area is inside Image 5's reference limits."""
    lo, hi = REFERENCE_AREA
    area = width * height
    if lo <= area <= hi:
        return width, height
    scale = math.sqrt((lo if area < lo else hi) / area)
    rnd = math.ceil if area < lo else math.floor
    return max(1, rnd(width * scale)), max(1, rnd(height * scale))


def letterbox(
    canvas: Image.Image, repaint: Image.Image, size: tuple[int, int]
) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int]]:
    """The canvas scaled to fit inside `size`, centred, and its mask (white = edit) placed the same way; the
    padding is black in the mask (protected), so Firefly leaves it alone. Returns (image, mask, box)."""
    scale = min(size[0] / canvas.width, size[1] / canvas.height)
    w, h = max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    image = Image.new("RGB", size, PAD)
    image.paste(canvas.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), (left, top))
    mask = Image.new("L", size, 0)
    if scale >= 1:  # enlarging: nearest keeps the edges where they were
        scaled = repaint.resize((w, h), Image.Resampling.NEAREST)
    else:  # shrinking: bilinear, then "any touch is edit", so the edit region never shrinks
        scaled = repaint.resize((w, h), Image.Resampling.BILINEAR).point(lambda v: 255 if v > 0 else 0)
    mask.paste(scaled, (left, top))
    return image, mask, (left, top, left + w, top + h)


# ---- request bodies ---------------------------------------------------------------------------------


def _variations(variations: int, seeds: Sequence[int] | None) -> dict[str, Any]:
    return {"numVariations": variations, **({"seeds": list(seeds)} if seeds else {})}


def fill_body(
    image_id: str,
    mask_id: str,
    prompt: str,
    size: tuple[int, int],
    variations: int,
    seeds: Sequence[int] | None,
    locale: str | None = None,
) -> dict[str, Any]:
    return {
        "image": {"source": {"uploadId": image_id}},
        "mask": {"source": {"uploadId": mask_id}, "invert": False},
        "prompt": prompt,
        **_variations(variations, seeds),
        "size": {"width": size[0], "height": size[1]},
        **({"promptBiasingLocaleCode": locale} if locale else {}),
    }


def expand_body(
    image_id: str, prompt: str, size: tuple[int, int], variations: int, seeds: Sequence[int] | None
) -> dict[str, Any]:
    return {
        "image": {"source": {"uploadId": image_id}},
        "prompt": prompt,
        **_variations(variations, seeds),
        "size": {"width": size[0], "height": size[1]},
        "placement": {"alignment": {"horizontal": "center", "vertical": "center"}},
    }


def instruct_body(
    image_id: str, prompt: str, level: str, seed: int | None, locale: str | None = None
) -> dict[str, Any]:
    """Image 5 instruct edit: one reference, one variation, no aspectRatio (it must be omitted with a reference)."""
    return {
        "prompt": prompt,
        "modelId": "firefly_image",
        "resolutionLevel": level,
        "numVariations": 1,
        **({"seeds": [seed]} if seed is not None else {}),
        "referenceBlobs": [{"source": {"uploadId": image_id}, "usage": "general"}],
        **({"modelSpecificPayload": {"localeCode": locale}} if locale else {}),
    }


# ---- answers ----------------------------------------------------------------------------------------


def parse_accept(body: Any) -> tuple[str, str]:
    """(job id, status URL) from a v3 202 `{jobId, statusUrl}` or a v4 200 `{links: {result: {href}}}`."""
    if isinstance(body, Mapping):
        if isinstance(body.get("statusUrl"), str):
            return str(body.get("jobId") or body["statusUrl"].rsplit("/", 1)[-1]), body["statusUrl"]
        href = ((body.get("links") or {}).get("result") or {}).get("href")
        if isinstance(href, str):
            return href.rstrip("/").rsplit("/", 1)[-1], href
    # accepted, so made and billed, but nothing to follow it by: counted as a possible charge, never sent elsewhere
    raise OutcomeUnknown("Firefly accepted the job but its answer names no status URL: outcome unknown")


@dataclass(frozen=True)
class JobState:
    status: str  # pending | running | succeeded | failed | cancelled | cancel_pending | timeout
    outputs: tuple[tuple[int | None, str], ...] = ()  # (seed, pre-signed URL), for succeeded
    error_code: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # altText, contentClass, size when given

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled", "timeout")


def parse_job(body: Any) -> JobState:
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise BackendUnavailable("Firefly's job status answer has no `status`")
    status = body["status"]
    if status != "succeeded":
        return JobState(status, error_code=body.get("error_code"), message=body.get("message"))
    result = body.get("result") or {}
    outputs = []
    for i, out in enumerate(result.get("outputs") or []):
        url = ((out or {}).get("image") or {}).get("url")
        if not isinstance(url, str):
            raise BackendUnavailable(f"Firefly's job result outputs[{i}] has no image.url")
        outputs.append((out.get("seed"), url))
    if not outputs:
        raise BackendUnavailable("Firefly's job succeeded without outputs")
    return JobState(
        status, outputs=tuple(outputs), extra={k: result[k] for k in ("altText", "contentClass", "size") if k in result}
    )


def job_error(job_id: str, state: JobState) -> EditError:
    detail = (
        f"Firefly job {job_id} {state.status}"
        + (f": {state.error_code}" if state.error_code else "")
        + (f": {state.message}" if state.message else "")
    )
    code = state.error_code or ""
    if code in CONTENT_CODES or "unsafe" in code:
        return ContentRejected(f"refused by Adobe's content policy ({detail})")
    if code == "validation_error":
        return InvalidRequest(f"the API refused the request ({detail})")
    return BackendUnavailable(detail)


# ---- errors and retries -----------------------------------------------------------------------------


def retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after` ("the date after which the client should retry": an HTTP date, or seconds) as seconds."""
    return parse_retry_after(headers.get("retry-after"))


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    wait = retry_after(headers)
    return (status in (408, 429) or status >= 500) and (wait is None or wait <= MAX_RETRY_AFTER)


def map_status_error(
    status: int, headers: Mapping[str, str], body: Any, *, what: str, creds_source: str, secrets: Sequence[str] = ()
) -> EditError:
    """An HTTP error answer to `what` ("upload", "fill-async submit", "job status", ...) -> our error tree."""
    code = body.get("error_code") if isinstance(body, Mapping) else None
    message = str(body.get("message") or "") if isinstance(body, Mapping) else str(body or "")[:300]
    for s in secrets:
        message = message.replace(s, "***") if s else message
    problems = (
        "; ".join(
            f"{'.'.join(map(str, e.get('loc') or []))}: {e.get('msg')}"
            for e in (body.get("validation_errors") or [])
            if isinstance(e, Mapping)
        )
        if isinstance(body, Mapping)
        else ""
    )
    detail = (
        f"{what}: HTTP {status}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else "")
        + (f" [{problems}]" if problems else "")
    )
    if status == 401:
        return BackendMisconfigured(f"Firefly refused the IMS token for the client from {creds_source} ({detail})")
    if status == 403:
        access = headers.get("x-access-error")
        hint = {
            "quota_exhausted": "the organisation's Firefly quota is used up",
            "user_non_entitled": "the client is not entitled to Firefly Services",
            "invalid_ims_scope": "the token lacks the firefly_api/ff_apis scopes",
        }.get(access or "", "")
        return BackendMisconfigured(
            f"access denied for the client from {creds_source}" + (f": {hint}" if hint else "") + f" ({detail})"
        )
    if status == 429:
        level = headers.get("x-access-rate-limit-level")
        return RateLimited(
            f"rate limited{' (' + level + ' level)' if level else ''}: {detail}", retry_after=retry_after(headers)
        )
    if status == 451 or code in CONTENT_CODES:
        return ContentRejected(f"refused by Adobe's content policy ({detail})")
    if status == 404 and what.endswith("submit"):
        return BackendMisconfigured(f"not found: wrong base_url? ({detail})")
    if 400 <= status < 500 and status not in (404, 408):
        return InvalidRequest(f"the API refused the request ({detail})")
    return BackendUnavailable(detail)
