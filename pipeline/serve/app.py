"""OpenAI-compatible edit server: `POST /v1/images/edits` in front of the router (FastAPI + uvicorn, extra `server`).

    editroute serve --policy configs/policies/balanced.yaml          # http://127.0.0.1:8000/v1

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    result = client.images.edit(model="auto", image=open("in.png", "rb"), prompt="...")

Routes: `POST /v1/images/edits` (OpenAI's multipart form and JSON answer; `model` = auto, a policy backend or an
OpenAI model id), `GET /v1/models`, `GET /healthz` (no auth), `GET /metrics` (Prometheus text).
Every edit answer names the backend, model, cost and job in `x-editroute-*` headers (`x-editroute-cost-usd` is the
job's cost; `x-editroute-billed-usd` is what this request added: 0 when it reused or joined an earlier job).
A repeated request runs a new job, as with OpenAI, unless it is a retry (`x-stainless-retry-count` >= 1), carries the
same `Idempotency-Key`, or has a `seed`: see `pipeline.serve.service`.
Errors use OpenAI's envelope and status codes, with `x-should-retry: false` where a retry cannot help and
`retry-after` on 429/503.

The module imports FastAPI (extra `server`); nothing imports it but `editroute serve` and its tests.

Auth: bearer keys from `--api-key-file` and/or `EDITROUTE_API_KEYS` (comma-separated), compared in constant
time. With no key configured the server listens on loopback only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backends.errors import EditError
from pipeline.errors import ConfigError
from pipeline.serve.metrics import CONTENT_TYPE
from pipeline.serve.upload import read_form
from pipeline.serve.wire import ApiError, Limits, images_response, models_list, parse_form

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEYS_ENV = "EDITROUTE_API_KEYS"
EDITS = "/v1/images/edits"


# ---- configuration ---------------------------------------------------------------------------------------


def load_api_keys(api_key_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Keys from the file (one per line or comma-separated; `#` comments) and from $EDITROUTE_API_KEYS."""
    env = os.environ if env is None else env
    texts = [env.get(KEYS_ENV, "")]
    if api_key_file is not None:
        try:
            texts.append(Path(api_key_file).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--api-key-file {api_key_file}: cannot read it ({exc.strerror or exc})") from None
    keys = []
    for text in texts:
        for line in text.splitlines():
            keys += [k.strip() for k in line.split("#", 1)[0].split(",") if k.strip()]
    if api_key_file is not None and not keys:
        raise ConfigError(f"--api-key-file {api_key_file}: holds no key")
    return tuple(dict.fromkeys(keys))


def check_bind(host: str, api_keys: Sequence[str]) -> None:
    if not api_keys and host not in LOOPBACK:
        raise ConfigError(
            f"--host {host}: no API keys are configured for this server's clients (--api-key-file or "
            f"${KEYS_ENV}; not your OpenAI key), so it only listens on 127.0.0.1; configure keys to listen on "
            "other addresses"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server announces itself; a busy port is a one-line `ConfigError`."""
    # proto IPPROTO_TCP, as uvicorn's own bind has: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every keep-alive answer waits ~40 ms for a delayed ACK
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a TIME_WAIT socket is no obstacle
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "already in use (another server?)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {why}; choose another --port") from None
    return sock


def check_upstream_credentials(backends: Mapping[str, Any]) -> None:
    """Every hosted backend can read its upstream credentials now, not one 502 per request later."""
    problems = []
    for name, backend in backends.items():
        check = getattr(backend, "check_credentials", None)
        if check is None:
            continue
        try:
            check()
        except EditError as exc:
            problems.append(f"backend {name!r}: {exc.message}")
    if problems:
        raise ConfigError(
            "cannot serve without the upstream credentials of every API backend (these are the services' keys, "
            "not this server's client keys): " + "; ".join(problems)
        )


def retry_count(headers: Mapping[str, str]) -> int:
    """`x-stainless-retry-count`: 0 on an OpenAI SDK's first try, N on its Nth automatic retry (absent or bad: 0)."""
    try:
        return max(0, int(headers.get("x-stainless-retry-count") or 0))
    except ValueError:
        return 0


class _Auth:
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]
        self._tenants = [hashlib.sha256(k).hexdigest()[:16] for k in self._keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> str:
        """The caller's tenant id (scopes Idempotency-Keys), or a 401."""
        if not self._keys:
            return "local"
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        presented = token.strip().encode()
        match = None
        for i, key in enumerate(self._keys):  # every key compared, in constant time
            if hmac.compare_digest(presented, key):
                match = i
        if match is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return self._tenants[match]


# ---- the app ---------------------------------------------------------------------------------------------


def create_app(service: Any, *, api_keys: Sequence[str] = (), limits: Limits | None = None) -> FastAPI:
    """The FastAPI app over an `EditService`; closes the service at shutdown."""
    limits = limits or Limits()
    auth = _Auth(api_keys)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(title="editroute", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service

    def error_response(err: ApiError, route: str, headers: Mapping[str, str] | None = None) -> Response:
        service.metrics.request(route, err.status)
        return JSONResponse(err.body(), status_code=err.status, headers={**(headers or {}), **err.headers()})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> Response:
        return error_response(err, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"Invalid URL ({request.method} {request.url.path})" if exc.status_code == 404 else str(exc.detail)
        return error_response(
            ApiError(exc.status_code, message, code="unknown_url" if exc.status_code == 404 else None), "other"
        )

    @app.post(EDITS)
    async def edits(request: Request) -> Response:
        tenant = auth.check(request.headers.get("authorization"))  # before a byte of the body is read
        try:
            form = await read_form(
                request.stream(), request.headers.get("content-type"), request.headers.get("content-length"), limits
            )
        except ClientDisconnect:
            raise ApiError(
                400, "The client disconnected while sending the request.", code="client_disconnected"
            ) from None
        parsed = await run_in_threadpool(parse_form, form)  # decodes every image: off the event loop
        del form
        prepared = await run_in_threadpool(
            service.prepare,
            parsed,
            idempotency_key=request.headers.get("idempotency-key"),
            tenant=tenant,
            retry=retry_count(request.headers) >= 1,
        )
        served = await service.submit(prepared)
        o = served.outcome
        reused = o.reused or served.joined
        headers = {
            "x-editroute-job-id": prepared.job.id,
            "x-request-id": prepared.job.id,
            "x-editroute-reused": "true" if reused else "false",
        }
        if o.backend:
            headers["x-editroute-backend"] = o.backend
        if not o.ok:
            return error_response(service.error_for(served), EDITS, headers)
        record = o.result or {}
        headers["x-editroute-model"] = str(record.get("model") or "")
        cost = Decimal(record.get("cost_usd") or "0")
        headers["x-editroute-cost-usd"] = str(cost)  # the job's cost, also on a reused answer
        headers["x-editroute-billed-usd"] = "0" if reused else str(cost)  # what this request added to the spend
        body = await run_in_threadpool(lambda: json.dumps(images_response(record, served.images)).encode())
        service.metrics.request(EDITS, 200)
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        auth.check(request.headers.get("authorization"))
        policy = service.policy
        entries = [("auto", "editroute")]
        entries += [(name, f"editroute:{spec.kind}") for name, spec in policy.backends.items()]
        entries += [(m, "openai") for m in service.model_ids() if m not in policy.backends]
        service.metrics.request("/v1/models", 200)
        return JSONResponse(models_list(entries))

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "backends": list(service.policy.backends), "auth": auth.enabled})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        auth.check(request.headers.get("authorization"))
        spend = await run_in_threadpool(service.ledger_spend)
        service.metrics.request("/metrics", 200)
        return PlainTextResponse(service.metrics.render(spend), media_type=CONTENT_TYPE)

    return app


# ---- running it ------------------------------------------------------------------------------------------


@dataclass
class ServeConfig:
    policy: str | Path
    out_dir: str | Path = "editroute-out"
    host: str = "127.0.0.1"  # build() refuses a non-loopback host without keys
    api_key_file: str | Path | None = None
    limits: Limits | None = None


def build(
    config: ServeConfig,
    *,
    backends: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Any, Any, tuple[str, ...]]:
    """(app, service, api_keys) for `config`, after the bind and key checks."""
    from pipeline.routing import build_backends, load_policy
    from pipeline.run import check_out_dir, open_ledger
    from pipeline.serve.service import EditService

    keys = load_api_keys(config.api_key_file, env)
    check_bind(config.host, keys)
    policy = load_policy(config.policy)
    backends = dict(backends) if backends is not None else build_backends(policy)
    check_upstream_credentials(backends)
    open_ledger(check_out_dir(config.out_dir)).close()  # a one-line error, not a traceback, if it cannot open
    service = EditService(policy, config.out_dir, backends=backends)
    if not keys:
        log.warning(
            "no client keys for this server (--api-key-file or $%s; not your OpenAI key): authentication is "
            "OFF; listening on loopback only",
            KEYS_ENV,
        )
    return create_app(service, api_keys=keys, limits=config.limits), service, keys


def uvicorn_server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=30
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn on a background thread; yields the base URL (`http://host:port/v1`)."""
    sock = bind_socket(host, port)
    server = uvicorn_server(app, host, sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="editroute-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the edit server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
