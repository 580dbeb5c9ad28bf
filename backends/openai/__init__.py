"""OpenAI image edits (`kind: openai`): the backend (backend.py: HTTP, retries, key handling, cost from the
response's `usage`) and the wire format of `POST /v1/images/edits` as pure functions (wire.py: request fields
and file parts, response parsing, which failure becomes which `backends.errors` class).

This package is `backends.openai`, never the `openai` SDK: code here imports absolutely and does not use the SDK."""

from backends.openai.backend import DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAIEditBackend, Settings

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "OpenAIEditBackend", "Settings"]
