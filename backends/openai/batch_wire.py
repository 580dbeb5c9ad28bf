"""OpenAI's Batch API for image edits on the wire, as pure functions: the JSONL request line, the Batch object, a
list page, the output and error file lines, and which failure of a line becomes which `backends.errors` class.

Shapes follow OpenAI's SDK 3.63 (`types/batch.py`, `batch_create_params.py`, `pagination.SyncCursorPage`) and the
Batch guide (https://developers.openai.com/api/docs/guides/batch): an input line is
`{"custom_id", "method": "POST", "url": "/v1/images/edits", "body": <the JSON edit body>}` (JSONL cannot carry a
multipart form, so the body is the JSON edit `backends.openai.wire.json_body` builds); an output line is
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`, the body an `ImagesResponse`;
a request that failed is a line of the error file, with the API's error envelope as its body or, for a request
that never ran (the batch expired), `response: null` and `error: {code, message}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.errors import BackendUnavailable, EditError
from backends.openai import wire

ENDPOINT = "/v1/images/edits"
COMPLETION_WINDOWS = {"24h": 24 * 3600}  # SDK 3.63: "Currently only `24h` is supported."
MAX_REQUESTS = 50_000  # "The file can contain up to 50,000 requests, and can be up to 200 MB in size."
MAX_FILE_BYTES = 200_000_000  # "200 MB", read as decimal megabytes: the smaller reading of the limit
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"}) | FINAL
METADATA_MAX_VALUE = 512  # "Values are strings with a maximum length of 512 characters."
# What the lane writes into each batch's `metadata`, so a run that died between creating a batch and recording it
# finds it again by listing (the list endpoint has no filter: the client matches these).
RUN_KEY = "editroute_run"
BATCH_KEY = "editroute_batch"
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_TAIL = 4096  # an ImagesResponse's `usage` comes after its images: look for it in the line's last bytes first


class BatchLineExpired(BackendUnavailable):
    """The batch expired before this request ran: nothing was generated, nothing billed."""


class BatchLineCancelled(BackendUnavailable):
    """The batch was cancelled before this request ran: nothing was generated, nothing billed."""


@dataclass(frozen=True)
class BatchInfo:
    """The parts of a Batch object the lane acts on."""

    id: str
    status: str
    input_file_id: str
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # why a batch `failed` (validation of its input file)

    @property
    def final(self) -> bool:
        return self.status in FINAL


def request_line(custom_id: str, body: Mapping[str, Any]) -> bytes:
    """One JSONL line of the input file (compact JSON: a data URL's size counts against the 200 MB limit)."""
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def create_body(input_file_id: str, metadata: Mapping[str, str], completion_window: str = "24h") -> dict[str, Any]:
    return {
        "input_file_id": input_file_id,
        "endpoint": ENDPOINT,
        "completion_window": completion_window,
        "metadata": dict(metadata),
    }


def parse_batch(obj: Any) -> BatchInfo:
    """A Batch object; a body that is not one is `BackendUnavailable` (a gateway that does not speak Batch)."""
    if not isinstance(obj, Mapping) or obj.get("object") != "batch" or not isinstance(obj.get("id"), str):
        raise BackendUnavailable(f"expected a Batch object, got {str(obj)[:200]!r}")
    status = obj.get("status")
    if status not in STATUSES:
        raise BackendUnavailable(f"batch {obj['id']}: unknown status {status!r}")
    counts = obj.get("request_counts") or {}
    errors = (obj.get("errors") or {}).get("data") or []
    return BatchInfo(
        id=obj["id"],
        status=status,
        input_file_id=str(obj.get("input_file_id") or ""),
        created_at=int(obj.get("created_at") or 0),
        output_file_id=obj.get("output_file_id"),
        error_file_id=obj.get("error_file_id"),
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        errors=tuple(
            f"{e.get('code') or 'error'}: {e.get('message') or ''}"
            + (f" (line {e['line']})" if e.get("line") is not None else "")
            for e in errors
            if isinstance(e, Mapping)
        ),
    )


def parse_page(obj: Any) -> tuple[list[BatchInfo], bool]:
    """A page of `GET /batches`: its batches (newest first) and whether more follow (`after` = the last id)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("data"), list):
        raise BackendUnavailable(f"expected a list page of batches, got {str(obj)[:200]!r}")
    items = [parse_batch(b) for b in obj["data"]]
    return items, bool(obj.get("has_more")) and bool(items)


def custom_id_of(line: bytes) -> str | None:
    """The line's custom_id without parsing the whole line (an output line carries base64 images: megabytes).
    OpenAI writes `custom_id` before `response`; a line that does not is parsed whole."""
    m = _CUSTOM_ID.search(line, 0, 512)
    if m is not None:
        return json.loads(b'"' + m.group(1) + b'"')
    try:
        value = json.loads(line).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def usage_of(line: bytes) -> Any:
    """An output line's `response.body.usage` without decoding its images (the line is parsed whole only when
    `usage` is not near its end)."""
    start = max(0, len(line) - _TAIL)
    for m in reversed(list(_USAGE.finditer(line, start))):
        try:
            value, _ = json.JSONDecoder().raw_decode(line[m.end() - 1 :].decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(value, Mapping) and "output_tokens" in value:
            return value
    body = (parse_line(line).body or {}) if line.strip() else {}
    return body.get("usage") if isinstance(body, Mapping) else None


@dataclass(frozen=True)
class LineResult:
    custom_id: str
    status_code: int | None  # None: the request never got an HTTP response (`error` says why)
    body: Any  # the ImagesResponse (200) or the error envelope
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and isinstance(self.body, Mapping)


def parse_line(raw: bytes | Mapping[str, Any]) -> LineResult:
    line = json.loads(raw) if isinstance(raw, bytes | bytearray) else raw
    if not isinstance(line, Mapping) or not isinstance(line.get("custom_id"), str):
        raise BackendUnavailable("a batch output line without a custom_id")
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, Mapping) and response.get("status_code") is not None:
        return LineResult(line["custom_id"], int(response["status_code"]), response.get("body"))
    error = error if isinstance(error, Mapping) else {}
    return LineResult(
        line["custom_id"], None, None, str(error.get("code") or "unknown_error"), str(error.get("message") or "")
    )


def line_error(result: LineResult, *, key_source: str) -> EditError:
    """A failed line as the error the runner acts on: the API's own error (a 400 fails the job, a 5xx takes the
    policy's fallbacks, as for a synchronous call), or expired / cancelled before it ran (not billed)."""
    if result.status_code is not None:
        err = wire.map_status_error(result.status_code, {}, result.body, key_source=key_source)
        return err.__class__(f"batch line {result.custom_id!r}: {err.message}", **err._extra())
    what = f"batch line {result.custom_id!r}: {result.error_code}: {result.error_message}"
    if result.error_code == "batch_expired":
        return BatchLineExpired(what + " (not billed)")
    if result.error_code == "batch_cancelled":
        return BatchLineCancelled(what + " (not billed)")
    return BackendUnavailable(what)
