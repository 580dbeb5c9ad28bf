"""OpenAI image edits (`kind: openai`): the backend (backend.py: HTTP, retries, key handling, cost from the
response's `usage`), the wire format of `POST /v1/images/edits` as pure functions (wire.py: multipart fields and
file parts, the JSON body, response parsing, which failure becomes which `backends.errors` class), the models as
data (models.py: lifecycle, rates and capabilities from configs/prices.yaml) and the estimate before a call
(estimate.py).

The request builders are exported for the server and the Batch API lane: `json_body(request, model,
takes_input_fidelity=...)` is a complete JSON edit body (local files as data URLs), `form_fields` + `file_parts`
the multipart form, `encoding_for` says which one a request needs. `kind: openai-batch` is the same API's Batch
lane (batch.py: HTTP for files and batches; batch_wire.py: JSONL lines, Batch objects, output lines), at Batch
prices; the runner drives it (`pipeline.run.batch_lane`).

This package is `backends.openai`, never the `openai` SDK: code here imports absolutely and does not use the SDK."""

from backends.openai.backend import DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAIEditBackend, Settings
from backends.openai.batch import OpenAIBatchBackend
from backends.openai.batch_wire import BatchLineCancelled, BatchLineExpired
from backends.openai.wire import encoding_for, file_parts, form_fields, json_body

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "BatchLineCancelled",
    "BatchLineExpired",
    "OpenAIBatchBackend",
    "OpenAIEditBackend",
    "Settings",
    "encoding_for",
    "file_parts",
    "form_fields",
    "json_body",
]
