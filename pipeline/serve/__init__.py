"""`editroute serve`: the OpenAI-compatible HTTP server. Owns the FastAPI app and its auth (app.py), the
edit service behind it that routes and runs each request through `pipeline.run` (service.py), the wire format
of OpenAI's image-edit endpoint (wire.py), the streamed multipart upload (upload.py) and Prometheus metrics.

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
    },
)
