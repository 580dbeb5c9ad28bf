"""`editroute serve`: the OpenAI-compatible HTTP server. Owns the FastAPI app and its auth (app.py), the
edit service behind it that routes and runs each request through `pipeline.run` (service.py), the wire format
of OpenAI's image-edit endpoint (wire.py), the streamed multipart upload (upload.py) and Prometheus metrics.

Names load on first use: FastAPI and python-multipart are imported only when the server is wanted."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "app": ("ServeConfig", "build", "check_bind", "create_app", "load_api_keys", "running", "uvicorn_server"),
    "service": ("EditService",),
    "wire": (
        "ApiError",
        "Form",
        "Limits",
        "ParsedForm",
        "Upload",
        "error_for_invalid",
        "error_for_outcome",
        "images_response",
        "models_list",
        "parse_form",
    ),
    "upload": ("read_form",),
    "metrics": ("CONTENT_TYPE", "Metrics"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
