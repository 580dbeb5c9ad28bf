"""`editroute serve`: the OpenAI-compatible HTTP server. Owns the FastAPI app and its auth (app.py), the edit
service behind it that routes and runs each request through `pipeline.run` (service.py), what `model` means
(models.py), which job a request belongs to (identity.py), its settings (settings.py), the request as OpenAI
checks it (request.py, fields.py, probe.py for images, refs.py for JSON image references, upload.py for the body
as it streams in), the answer and errors on the wire (wire.py), streamed edits (streaming.py) and Prometheus
metrics (metrics.py).

Names load on first use: FastAPI and python-multipart are imported only when the server is wanted."""

from backends.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "app": (
            "ServeConfig",
            "bind_socket",
            "build",
            "check_bind",
            "check_upstream_credentials",
            "create_app",
            "load_api_keys",
            "running",
            "uvicorn_server",
        ),
        "service": ("EditService", "Who"),
        "models": ("serve_policy",),
        "settings": ("ServeSettings",),
        "wire": (
            "ApiError",
            "Form",
            "Limits",
            "ParsedRequest",
            "Upload",
            "error_for_invalid",
            "error_for_outcome",
            "images_response",
            "models_list",
        ),
        "request": ("parse_form", "parse_json"),
        "upload": ("read_body", "read_form"),
        "metrics": ("CONTENT_TYPE", "Metrics"),
    },
)
