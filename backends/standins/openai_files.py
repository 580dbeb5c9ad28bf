"""The stand-in's small endpoints: `GET /v1/models[/{id}]` and a minimal Files API (`POST /v1/files`,
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`), whose ids JSON edits and batches resolve. A `purpose=batch`
upload must be a .jsonl file (the Batch API's input); batch output and error files are `purpose=batch_output`.

Models are what prices.yaml lists as not retired (a retired model is gone from the list, as the API drops shut-down
models), each with `shutdown_date` from prices.yaml unless `server.model_shutdowns` says otherwise.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from backends.standins.openai_server import ApiError, RawBody, RecordedPart, RecordedRequest

if TYPE_CHECKING:
    from backends.standins.openai_server import FakeOpenAIServer

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")  # the SDK's FilePurpose
CREATED = 1_776_729_600  # a fixed `created` for every listed model (the stand-in has no release history)


def model_object(server: FakeOpenAIServer, model_id: str) -> dict:
    entry = server.prices.models[model_id]
    shutdown = server.model_shutdowns.get(model_id, entry.shutdown)
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system", "shutdown_date": shutdown}


def listed_models(server: FakeOpenAIServer) -> list[str]:
    return [k for k, m in server.prices.models.items() if m.status != "retired" or k in server.model_shutdowns]


def route(server: FakeOpenAIServer, rec: RecordedRequest, parts: list[tuple[RecordedPart, bytes]]) -> dict | RawBody:
    path = rec.path.rstrip("/")
    head, _, tail = path.rpartition("/")
    if rec.method == "GET" and path.endswith("/models"):
        return {"object": "list", "data": [model_object(server, m) for m in listed_models(server)]}
    if rec.method == "GET" and head.endswith("/models"):
        if tail not in listed_models(server):
            raise ApiError(
                404,
                f"The model '{tail}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return model_object(server, tail)
    if rec.method == "POST" and path.endswith("/files"):
        return upload(server, rec, parts)
    if rec.method == "GET" and tail == "content" and head.rpartition("/")[0].endswith("/files"):
        entry = server.files.get(head.rpartition("/")[2])
        if entry is None:
            raise ApiError(404, f"No such File object: {head.rpartition('/')[2]}", param="id", code=None)
        return RawBody(entry["content"])
    if rec.method == "GET" and head.endswith("/files"):
        entry = server.files.get(tail)
        if entry is None:
            raise ApiError(404, f"No such File object: {tail}", param="id", code=None)
        return {k: v for k, v in entry.items() if k != "content"}
    raise ApiError(404, f"Invalid URL ({rec.method} {rec.path})", code="unknown_url")


def upload(server: FakeOpenAIServer, rec: RecordedRequest, parts: list[tuple[RecordedPart, bytes]]) -> dict:
    if not rec.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body with `file` and `purpose`.", code="invalid_value")
    files = [(p, data) for p, data in parts if p.name == "file" and p.filename is not None]
    purpose = rec.fields.get("purpose")
    if not files:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    if purpose not in FILE_PURPOSES:
        raise ApiError(
            400,
            f"Invalid value for 'purpose': {purpose!r}. Supported values are: {', '.join(FILE_PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )
    part, data = files[0]
    if purpose == "batch" and not (part.filename or "").endswith(".jsonl"):
        raise ApiError(
            400,
            "Invalid file format for Batch API. Must be .jsonl",
            param="file",
            code="invalid_file_format",
        )
    file_id = add_file(server, data, part.filename or "file", purpose)
    return {k: v for k, v in server.files[file_id].items() if k != "content"}


def add_file(server: FakeOpenAIServer, data: bytes, filename: str = "image.png", purpose: str = "vision") -> str:
    """Store a file as if uploaded (for tests and the demo); returns its id."""
    file_id = "file-" + hashlib.sha256(data + str(len(server.files)).encode()).hexdigest()[:24]
    server.files[file_id] = {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "content": data,
    }
    return file_id
