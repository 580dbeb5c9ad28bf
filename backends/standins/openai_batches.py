"""The stand-in's Batch API (https://developers.openai.com/api/reference/resources/batches): `POST /v1/batches`,
`GET /v1/batches[/{id}]` (newest first, `after`/`limit` pagination), `POST /v1/batches/{id}/cancel`, with the object
shapes of OpenAI's SDK 3.63 (`types/batch.py`, `batch_create_params.py`, `pagination.SyncCursorPage`).

A batch's input is a JSONL file uploaded with `purpose=batch`; each line `{custom_id, method, url, body}` is an
image edit run by the stand-in's own edit (`openai_edit.run_json_edit`: the same rules and fake "model" as a
synchronous call) on a worker thread, after `server.batch_delay_s`. Answers go to an output file (200s) and an
error file (failed requests, and `batch_expired` lines), both `purpose=batch_output`, as the real API writes them:
`{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`. Each line that
ran is billed at the model's Batch rates (prices.yaml `batch:`) and recorded in `server.batch_bills`.

Knobs for tests and the demo (attributes of `FakeOpenAIServer`): `batch_delay_s` (time in validating before any
line runs), `batch_line_s` (per line), `batch_expire_after` (the batch expires after that many lines: the rest go
to the error file as `batch_expired`), `batch_fail_marker` (a prompt containing it gets a 500 in the error file),
`before_batch(batch_id)` (may block: holds a batch in progress), `batches_script` (per create: "ok", "drop" = close
the connection before creating, "drop_after" = create it, then close without answering, or an HTTP status).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from backends.standins.loopback import Drop
from backends.standins.openai_files import add_file
from backends.standins.openai_server import ApiError, RecordedRequest, usage_cost

if TYPE_CHECKING:
    from backends.standins.openai_server import FakeOpenAIServer

log = logging.getLogger(__name__)

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
)
IMPLEMENTED = ("/v1/images/edits",)  # what this stand-in can run
MAX_REQUESTS = 50_000  # "The file can contain up to 50,000 requests, and can be up to 200 MB in size."
MAX_BYTES = 200 * 1024 * 1024
FINAL = ("completed", "failed", "expired", "cancelled")


def route(server: FakeOpenAIServer, rec: RecordedRequest) -> dict:
    path = rec.path.rstrip("/")
    parts = path.split("/")
    if rec.method == "POST" and path.endswith("/batches"):
        return create(server, rec)
    if rec.method == "GET" and path.endswith("/batches"):
        return list_page(server, rec.query)
    if rec.method == "GET" and parts[-2] == "batches":
        return public(_get(server, parts[-1]))
    if rec.method == "POST" and parts[-1] == "cancel" and parts[-3] == "batches":
        return cancel(server, parts[-2])
    raise ApiError(404, f"Invalid URL ({rec.method} {rec.path})", code="unknown_url")


def _get(server: FakeOpenAIServer, batch_id: str) -> dict:
    batch = server.batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
    return batch


def public(batch: dict) -> dict:
    """The Batch object as the API returns it (the stand-in's bookkeeping stripped)."""
    with batch["_lock"]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}


def _scripted(server: FakeOpenAIServer) -> str:
    with server._lock:
        item = server.batches_script.popleft() if server.batches_script else "ok"
    if isinstance(item, int):
        raise ApiError(item, "The server had an error while processing your request.", type="server_error")
    if item == "drop":
        raise Drop
    return str(item)


def create(server: FakeOpenAIServer, rec: RecordedRequest) -> dict:
    body = rec.json or {}
    for name in body:
        if name not in ("completion_window", "endpoint", "input_file_id", "metadata", "output_expires_after"):
            raise ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    for name in ("completion_window", "endpoint", "input_file_id"):
        if not isinstance(body.get(name), str):
            raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if body["completion_window"] != "24h":
        raise ApiError(
            400,
            f"Invalid value for 'completion_window': '{body['completion_window']}'. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    if body["endpoint"] not in ENDPOINTS:
        raise ApiError(
            400, f"Invalid value for 'endpoint': '{body['endpoint']}'.", param="endpoint", code="invalid_value"
        )
    _check_metadata(body.get("metadata"))
    entry = server.files.get(body["input_file_id"])
    if entry is None:
        raise ApiError(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
    if entry["purpose"] != "batch":
        raise ApiError(
            400,
            f"File {body['input_file_id']} has purpose '{entry['purpose']}'; a batch input needs purpose 'batch'.",
            param="input_file_id",
            code="invalid_value",
        )
    what = _scripted(server)
    now = int(time.time())
    batch_id = (
        "batch_"
        + hashlib.sha256(f"{body['input_file_id']}|{time.time_ns()}|{len(server.batches)}".encode()).hexdigest()[:24]
    )
    batch: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": body["endpoint"],
        "errors": None,
        "input_file_id": body["input_file_id"],
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
        "model": None,
        "usage": None,
        "_lock": threading.RLock(),
        "_cancel": threading.Event(),
    }
    with server._lock:
        server.batches[batch_id] = batch
        server.batch_order.append(batch_id)
    answer = public(batch)  # as created, before its worker moves it on
    threading.Thread(target=_work, args=(server, batch), name=f"standin-{batch_id[:14]}", daemon=True).start()
    if what == "drop_after":  # made, never answered: the client must find it by listing
        raise Drop
    return answer


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise ApiError(400, "Invalid 'metadata': expected an object with at most 16 keys.", param="metadata")
    for k, v in metadata.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise ApiError(
                400,
                "Invalid 'metadata': keys are strings of at most 64 characters, values strings of at most 512.",
                param="metadata",
            )


def list_page(server: FakeOpenAIServer, query: dict[str, str]) -> dict:
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "Invalid 'limit': expected an integer.", param="limit", code="invalid_type") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, f"Invalid 'limit': {limit}. Expected a value between 1 and 100.", param="limit")
    with server._lock:
        ids = list(reversed(server.batch_order))  # newest first
    after = query.get("after")
    if after:
        if after not in ids:
            raise ApiError(400, f"Invalid 'after': no batch '{after}'.", param="after")
        ids = ids[ids.index(after) + 1 :]
    page = [public(server.batches[i]) for i in ids[:limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ids) > limit,
    }


def cancel(server: FakeOpenAIServer, batch_id: str) -> dict:
    batch = _get(server, batch_id)
    with batch["_lock"]:
        if batch["status"] in FINAL:
            raise ApiError(
                409,
                f"Cannot cancel a batch with status '{batch['status']}'.",
                param=None,
                code="batch_not_cancellable",
            )
        if batch["status"] != "cancelling":
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
        batch["_cancel"].set()
    return public(batch)


# ---- the worker: one thread per batch ------------------------------------------------------------------------


def _fail(batch: dict, code: str, message: str, line: int | None = None) -> None:
    with batch["_lock"]:
        batch["status"] = "failed"
        batch["failed_at"] = int(time.time())
        batch["errors"] = {
            "object": "list",
            "data": [{"code": code, "message": message, "param": None, "line": line}],
        }


def _parse_input(batch: dict, content: bytes, endpoint: str) -> list[dict] | None:
    """The input file's lines, or None after failing the batch (as the API's validation does)."""
    if len(content) > MAX_BYTES:
        _fail(batch, "file_too_large", f"The input file is larger than the {MAX_BYTES} byte limit.")
        return None
    lines, seen = [], set()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            _fail(batch, "invalid_json_line", "This line is not parseable as valid JSON.", number)
            return None
        if (
            not isinstance(line, dict)
            or not isinstance(line.get("custom_id"), str)
            or not isinstance(line.get("body"), dict)
        ):
            _fail(batch, "invalid_request", "Each line needs a string custom_id and an object body.", number)
            return None
        if line.get("method") != "POST":
            _fail(batch, "invalid_request", "The only supported method is POST.", number)
            return None
        if line.get("url") != endpoint:
            _fail(batch, "mismatched_endpoint", f"The line's url must match the batch endpoint {endpoint}.", number)
            return None
        if line["custom_id"] in seen:
            _fail(batch, "duplicate_custom_id", f"The custom_id '{line['custom_id']}' is not unique.", number)
            return None
        seen.add(line["custom_id"])
        lines.append(line)
    if not lines:
        _fail(batch, "empty_file", "The input file has no requests.")
        return None
    if len(lines) > MAX_REQUESTS:
        _fail(batch, "too_many_requests", f"The input file has more than {MAX_REQUESTS} requests.")
        return None
    return lines


def _work(server: FakeOpenAIServer, batch: dict) -> None:
    try:
        _run(server, batch)
    except Exception:  # a stand-in bug must show, not hang the client for ever
        log.exception("stand-in batch %s crashed", batch["id"])
        _fail(batch, "server_error", "The stand-in failed while running this batch.")


def _run(server: FakeOpenAIServer, batch: dict) -> None:
    cancel: threading.Event = batch["_cancel"]
    if cancel.wait(server.batch_delay_s):
        return _finish(server, batch, [], [], [], cancelled=True)
    entry = server.files[batch["input_file_id"]]
    lines = _parse_input(batch, entry["content"], batch["endpoint"])
    if lines is None:
        return
    if batch["endpoint"] not in IMPLEMENTED:
        return _fail(batch, "unsupported_endpoint", f"The stand-in does not run {batch['endpoint']} batches.")
    with batch["_lock"]:
        batch["status"] = "in_progress"
        batch["in_progress_at"] = int(time.time())
        batch["request_counts"]["total"] = len(lines)
        batch["model"] = lines[0]["body"].get("model")
    if server.before_batch is not None:
        server.before_batch(batch["id"])
    outputs: list[dict] = []
    errors: list[dict] = []
    usage = {"input_tokens": 0, "output_tokens": 0}
    for done, line in enumerate(lines):
        if cancel.is_set():
            return _finish(server, batch, outputs, errors, [], cancelled=True, usage=usage)
        if server.batch_expire_after is not None and done >= server.batch_expire_after:
            return _finish(server, batch, outputs, errors, lines[done:], usage=usage)
        if server.batch_line_s:
            time.sleep(server.batch_line_s)
        out = _one(server, batch, line)
        (outputs if out["response"] and out["response"]["status_code"] == 200 else errors).append(out)
        body = (out["response"] or {}).get("body") or {}
        if out["response"] and out["response"]["status_code"] == 200:
            usage["input_tokens"] += body["usage"]["input_tokens"]
            usage["output_tokens"] += body["usage"]["output_tokens"]
        with batch["_lock"]:
            counts = batch["request_counts"]
            counts["completed" if out in outputs else "failed"] += 1
    _finish(server, batch, outputs, errors, [], usage=usage)


def _one(server: FakeOpenAIServer, batch: dict, line: dict) -> dict:
    """One request of the batch, run as the synchronous endpoint would run it; billed at Batch rates if it ran."""
    from backends.standins.openai_edit import run_json_edit

    rec = RecordedRequest("POST", batch["endpoint"], {}, "bearer", "application/json", json=line["body"])
    request_id = "req_" + hashlib.sha256(f"{batch['id']}|{line['custom_id']}".encode()).hexdigest()[:20]
    line_id = "batch_req_" + hashlib.sha256(f"{request_id}|line".encode()).hexdigest()[:24]
    prompt = str(line["body"].get("prompt", ""))
    try:
        if server.batch_fail_marker and server.batch_fail_marker in prompt:
            raise ApiError(500, "The server had an error while processing your request.", type="server_error")
        if line["body"].get("stream"):
            raise ApiError(400, "Streaming is not supported in the Batch API.", param="stream", code="invalid_value")
        payload = run_json_edit(server, rec, line["body"])
    except ApiError as err:
        return {
            "id": line_id,
            "custom_id": line["custom_id"],
            "response": {"status_code": err.status, "request_id": request_id, "body": err.body()},
            "error": None,
        }
    entry = server.prices.model(line["body"].get("model") or "gpt-image-2")
    billed = usage_cost(entry.batch or entry, payload)
    with server._lock:
        server.batch_bills.append((batch["id"], line["custom_id"], billed))
    return {
        "id": line_id,
        "custom_id": line["custom_id"],
        "response": {"status_code": 200, "request_id": request_id, "body": payload},
        "error": None,
    }


def _jsonl(items: list[dict]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def _finish(
    server: FakeOpenAIServer,
    batch: dict,
    outputs: list[dict],
    errors: list[dict],
    unrun: list[dict],
    *,
    cancelled: bool = False,
    usage: dict | None = None,
) -> None:
    """Write the output and error files and settle the batch's final status. `unrun`: lines an expiry left; they
    go to the error file as `batch_expired`. Lines a cancel left out appear in neither file."""
    expired = bool(unrun)
    for line in unrun:
        errors.append(
            {
                "id": "batch_req_" + hashlib.sha256(f"{batch['id']}|{line['custom_id']}|x".encode()).hexdigest()[:24],
                "custom_id": line["custom_id"],
                "response": None,
                "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired.",
                },
            }
        )
    with batch["_lock"]:
        if not cancelled:
            batch["status"] = "finalizing"
            batch["finalizing_at"] = int(time.time())
    now = int(time.time())
    output_id = add_file(server, _jsonl(outputs), "batch_output.jsonl", "batch_output") if outputs else None
    error_id = add_file(server, _jsonl(errors), "batch_errors.jsonl", "batch_output") if errors else None
    with batch["_lock"]:
        batch["output_file_id"] = output_id
        batch["error_file_id"] = error_id
        batch["request_counts"]["failed"] += len(unrun)
        if usage is not None:
            batch["usage"] = {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            }
        if cancelled:
            batch["status"], batch["cancelled_at"] = "cancelled", now
        elif expired:
            batch["status"], batch["expired_at"] = "expired", now
        else:
            batch["status"], batch["completed_at"] = "completed", now
