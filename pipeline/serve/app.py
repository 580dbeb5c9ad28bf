"""OpenAI-compatible edit server: `POST /v1/images/edits` in front of the router (FastAPI + uvicorn, extra `server`).

    editroute serve --policy configs/policies/balanced.yaml          # http://127.0.0.1:8000/v1

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    result = client.images.edit(model="auto", image=open("in.png", "rb"), prompt="...")

Routes: `POST /v1/images/edits` (OpenAI's multipart form or JSON body; `stream=true` answers with server-sent
events; `model` = auto, a policy backend or an OpenAI model id), `GET /v1/models[/{id}]`, `GET /healthz` (no auth),
`GET /metrics` (Prometheus text). Every edit answer names the backend, model, cost and job in `x-editroute-*`
headers (`x-editroute-cost-usd` is the job's cost; `x-editroute-billed-usd` is what this request added: 0 when it
reused or joined an earlier job). Which job a request belongs to (a new one, its own first try's, its
Idempotency-Key's): `pipeline.serve.identity`. Errors use OpenAI's envelope and status codes, a provider's own
error passed on as it sent it, with `x-should-retry: false` where a retry cannot help. Settings and bounds:
docs/server.md.

The module imports FastAPI (extra `server`); nothing imports it but `editroute serve` and its tests.

Auth: bearer keys from `--api-key-file` and/or `EDITROUTE_API_KEYS` (comma-separated), compared in constant
time. With no key configured the server listens on loopback only.
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backends.errors import EditError
from pipeline.errors import ConfigError
from pipeline.serve.identity import client_fingerprint, read_timeout, retry_count
from pipeline.serve.metrics import CONTENT_TYPE
from pipeline.serve.request import parse_form, parse_json
from pipeline.serve.service import Prepared, Who
from pipeline.serve.settings import ServeSettings
from pipeline.serve.streaming import client_gone, first_of, stream_edit
from pipeline.serve.upload import read_body, read_form
from pipeline.serve.wire import ApiError, Form, Limits, images_response, models_list

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
    limits = limits or service.limits
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # never a plain-text 500 or a traceback
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(
            ApiError(500, "The server had an error while processing your request.", type="server_error"), "other"
        )

    async def read_request(request: Request) -> tuple[Any, float]:
        """The body as a multipart `Form` or JSON bytes (parsed off the loop), and how long it took to arrive."""
        started = time.monotonic()
        ctype = request.headers.get("content-type") or ""
        mime = ctype.split(";", 1)[0].strip().lower()
        try:
            if mime == "multipart/form-data":
                body: Any = await read_form(request.stream(), ctype, request.headers.get("content-length"), limits)
            elif mime == "application/json":
                body = await read_body(request.stream(), request.headers.get("content-length"), limits)
            else:
                raise ApiError(
                    400,
                    f"Invalid Content-Type header ({mime or 'none'}): send multipart/form-data (as the OpenAI "
                    "SDK's images.edit does) or application/json.",
                    code="invalid_content_type",
                )
        except ClientDisconnect:
            raise ApiError(
                400, "The client disconnected while sending the request.", code="client_disconnected"
            ) from None
        return body, time.monotonic() - started

    def prepare(body: Any, who: Who) -> Prepared:
        """Parse, probe and key a request (blocking: runs on a worker thread)."""
        if isinstance(body, Form):
            parsed = parse_form(body, limits)
        else:
            try:
                data = json.loads(body)
            except ValueError:
                raise ApiError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                    "HTTP library correctly.)",
                    code="invalid_json",
                ) from None
            parsed = parse_json(data, limits, service.refs)
        return service.prepare(parsed, who)

    @app.post(EDITS)
    async def edits(request: Request) -> Response:
        tenant = auth.check(request.headers.get("authorization"))  # before a byte of the body is read
        body, upload_s = await read_request(request)
        h = request.headers
        who = Who(
            tenant=tenant,
            client=client_fingerprint(h, request.client.host if request.client else None),
            retry=retry_count(h),
            read_timeout_s=read_timeout(h),
            upload_s=upload_s,
            idempotency_key=h.get("idempotency-key"),
        )
        prepared = await run_in_threadpool(prepare, body, who)
        del body
        headers = {"x-editroute-job-id": prepared.job.id, "x-request-id": prepared.job.id}
        if prepared.job.request.partial_images is not None:
            response = await stream_edit(service, prepared, request.receive, headers)
            service.metrics.request(EDITS, response.status_code)
            return response
        answer, joined = service.start(prepared)
        came, served = await first_of(asyncio.shield(answer), asyncio.ensure_future(client_gone(request.receive)))
        if not came:  # gone before its answer: the job goes on; the SDK's retry joins it (identity)
            answer.add_done_callback(lambda f: f.result().passed_on())  # nobody to pass it on to
            return Response(status_code=499)
        reused = served.reused or joined
        headers["x-editroute-reused"] = "true" if reused else "false"
        if served.backend:
            headers["x-editroute-backend"] = served.backend
        service.tries.answered(prepared.key)  # an SDK retry from now on is a new request's
        if not served.ok:
            served.passed_on()
            return error_response(service.error_for(served), EDITS, headers)
        headers["x-editroute-model"] = str(served.record.get("model") or "")
        headers["x-editroute-cost-usd"] = str(served.cost)  # the job's cost, also on a reused answer
        headers["x-editroute-billed-usd"] = "0" if reused else str(served.cost)  # what this request added
        content = images_response(served.record, served.images, None, prepared.job.request)  # ~1 ms: one join
        service.metrics.request(EDITS, 200)
        return _Answer(content, served, headers)

    def model_entries() -> list[tuple[str, str]]:
        """(id, owned_by) of every model a request may name: auto, the policy's backends, OpenAI model ids."""
        policy = service.policy
        entries = [("auto", "editroute")]
        entries += [(name, f"editroute:{spec.kind}") for name, spec in policy.backends.items()]
        return entries + [(m, "openai") for m in service.model_ids() if m not in policy.backends]

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        auth.check(request.headers.get("authorization"))
        service.metrics.request("/v1/models", 200)
        return JSONResponse(models_list(model_entries()))

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        auth.check(request.headers.get("authorization"))
        found = [e for e in model_entries() if e[0] == model_id]
        if found:
            service.metrics.request("/v1/models", 200)
            return JSONResponse(models_list(found)["data"][0])
        service.resolve(model_id)  # raises the 404 that names why (retired: when, and its replacement)
        raise ApiError(
            404,
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

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


class _Answer(Response):
    """A JSON answer that tells the job when it has been sent (its backend then decodes and writes the images)."""

    media_type = "application/json"

    def __init__(self, content: bytes, served: Any, headers: Mapping[str, str]) -> None:
        super().__init__(content, headers=dict(headers))
        self.served = served

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.served.passed_on()


# ---- running it ------------------------------------------------------------------------------------------


@dataclass
class ServeConfig:
    policy: str | Path
    out_dir: str | Path = "editroute-out"
    host: str = "127.0.0.1"  # build() refuses a non-loopback host without keys
    api_key_file: str | Path | None = None
    limits: Limits | None = None
    settings: ServeSettings | None = None  # retry window, upstream wait cap, API concurrency, URL fetching


def build(
    config: ServeConfig,
    *,
    backends: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Any, Any, tuple[str, ...]]:
    """(app, service, api_keys) for `config`, after the bind and key checks."""
    from pipeline.routing import load_policy
    from pipeline.run import check_out_dir, open_ledger
    from pipeline.serve.service import EditService

    keys = load_api_keys(config.api_key_file, env)
    check_bind(config.host, keys)
    policy = load_policy(config.policy)
    open_ledger(check_out_dir(config.out_dir)).close()  # a one-line error, not a traceback, if it cannot open
    service = EditService(
        policy,
        config.out_dir,
        backends=dict(backends) if backends is not None else None,
        settings=config.settings,
        limits=config.limits,
    )
    try:
        check_upstream_credentials(service.backends)
    except BaseException:
        service.close()
        raise
    if not keys:
        log.warning(
            "no client keys for this server (--api-key-file or $%s; not your OpenAI key): authentication is "
            "OFF; listening on loopback only",
            KEYS_ENV,
        )
    for line in service.describe_limits():
        log.info("backend %s", line)
    return create_app(service, api_keys=keys), service, keys


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
