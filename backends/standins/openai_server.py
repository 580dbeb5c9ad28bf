"""A loopback STAND-IN for OpenAI's image edit API (not the real API), speaking its wire format.

`POST /v1/images/edits` as multipart (stdlib email parser) or JSON (`images: [{file_id} | {image_url}]`, data URLs,
https URLs served from `remote_images`), JSON out: `created`, `data[].b64_json`, `background`, `output_format`,
`quality`, `size`, `usage` (with `output_tokens_details`) computed from the same token tables editroute bills with
(`backends.pricing`), so costs are realistic. Each model's rules come from its capabilities in prices.yaml
(`accept_unverified=True` also applies its `unverified:` features, as if the real API took them). Also served:
`GET /v1/models[/{id}]` with `shutdown_date`, a minimal Files API (`POST /v1/files`, `GET /v1/files/{id}[/content]`)
whose ids the JSON edits resolve, and the Batch API for image edits (openai_batches.py: create, retrieve, list,
cancel; output and error files; completion delay, partial failures, expiry). Real error envelopes `{"error":
{message, type, param, code}}` with real status codes: `duplicate_parameter`, `unsupported_file_mimetype`,
`unknown_parameter`, `model_not_found` for retired and unknown models, `invalid_input_fidelity_model`, 401 on a
wrong key, 429 with retry-after(-ms) over a rate limit, moderation_blocked on a trigger word; plus scripted failures
(`script=[500, "drop", {"status": 429, "retry_after_ms": 20}, "ok"]`, one item per edit request). `stream=true`
answers with server-sent events: each partial image (the picture moving from the input to the result,
`stream_interval_s` apart) and the completed image, whose usage counts 100 output tokens per partial. Every
response carries `x-editroute-standin: openai`.

What it answered is recorded for crash tests: each `RecordedRequest` says when its answer was made
(`answered_at`: the API bills a 200 when it is generated, whether or not the client is still there), when its
last byte was written to the socket (`delivered_at`, None if the client had gone) and what it billed
(`billed_usd`). `before_answer(rec)`, if given, runs before each answer and may block (hold a request in flight).

    with FakeOpenAIServer(api_key="sk-test") as server:
        backend = OpenAIEditBackend("openai", Settings(base_url=server.base_url))

By hand: `python -m backends.standins.openai_server --port 8765`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from backends.pricing import (
    PriceTable,
    load_prices,
    token_cost,
)

log = logging.getLogger(__name__)

BANNER = "STAND-IN for OpenAI's image edit API (loopback fake, not the real service)"
# Text fields of a multipart edit (OpenAI's SDK sends these; `moderation` exists only in the JSON schema).
FIELDS = {
    "model",
    "prompt",
    "n",
    "size",
    "quality",
    "output_format",
    "output_compression",
    "background",
    "input_fidelity",
    "user",
    "stream",
    "partial_images",
    "response_format",
    "complexity",
    "safety_identifier",
    "frame_count",
    "frame_duration_ms",
}
JSON_FIELDS = (FIELDS - {"response_format"}) | {"images", "mask", "markup", "moderation"}
IMAGE_MIMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DEFAULT_MODEL = "gpt-image-2.5-sunburst"  # the last default the edit reference named (2.5 stage)


@dataclass
class RecordedPart:
    name: str
    filename: str | None
    content_type: str | None  # None when the part had no Content-Type header
    size: int


@dataclass
class RecordedRequest:
    """What reached the server. The auth header's value is never kept: only which style was used."""

    method: str
    path: str
    query: dict[str, str]
    auth: str | None  # "bearer" | "api-key" | None
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)
    parts: list[RecordedPart] = field(default_factory=list)  # every part in order, text fields included
    status: int = 0
    json: dict | None = None  # a JSON body, as received (data URLs included)
    received_at: float = 0.0  # time.time() when the request had fully arrived
    body_bytes: int = 0  # the request body's size on the wire
    answered_at: float | None = None  # time.time() when the answer was made (a 200 is billed from then on)
    delivered_at: float | None = None  # time.time() when its last byte was written (None: the client had gone)
    billed_usd: Decimal = Decimal(0)  # what a 200 costs at the stand-in's prices (its `usage`)
    payloads: list[tuple[RecordedPart, bytes]] = field(default_factory=list, repr=False)  # until answered

    @property
    def encoding(self) -> str:
        return "json" if self.content_type.startswith("application/json") else "multipart"

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def file_parts(self) -> list[RecordedPart]:
        return [p for p in self.parts if p.filename is not None]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code},
            **self.extra,
        }


@dataclass
class RawBody:
    """An answer that is not JSON (a file's content)."""

    data: bytes
    content_type: str = "application/octet-stream"


class _Drop(Exception):
    """Close the connection without answering (a scripted network failure)."""


class FakeOpenAIServer:
    def __init__(
        self,
        port: int = 0,
        *,
        latency_s: float = 0.0,
        rate_limit_rpm: int | None = None,
        rate_window_s: float = 60.0,
        script: list | None = None,
        api_key: str | None = None,
        moderation_words: tuple[str, ...] = ("moderation-test",),
        auto_quality: str = "medium",
        prices: PriceTable | None = None,
        host: str = "127.0.0.1",
        accept_unverified: bool = False,
        cached_tokens: int = 0,
        remote_images: dict[str, bytes] | None = None,
        model_shutdowns: dict[str, str | None] | None = None,
        before_answer: Callable[[RecordedRequest], None] | None = None,
        stream_interval_s: float = 0.0,
        canned: bool = False,
        batch_delay_s: float = 0.0,
        batch_line_s: float = 0.0,
        batch_expire_after: int | None = None,
        batch_fail_marker: str | None = "batch-fail-test",
        before_batch: Callable[[str], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.latency_s = latency_s
        self.rate_limit_rpm, self.rate_window_s = rate_limit_rpm, rate_window_s
        self.script = collections.deque(script or [])
        self._api_key = api_key
        self.moderation_words = tuple(w.lower() for w in moderation_words)
        self.auto_quality = auto_quality
        self.prices = prices or load_prices()
        self.accept_unverified = accept_unverified  # act as if the API took each model's `unverified:` features
        self.cached_tokens = cached_tokens  # report this many input tokens as cached (input_tokens_details)
        self.remote_images = dict(remote_images or {})  # https URL -> bytes, what "downloading" a URL finds
        self.model_shutdowns = dict(model_shutdowns or {})  # GET /models: shutdown_date overrides per model id
        self.stream_interval_s = stream_interval_s  # a streamed edit: seconds between its events
        # Benchmarks: answer every edit after the first with that first answer, without parsing or computing
        # anything, so the stand-in costs no CPU beside what it measures (a real API's work is on its servers).
        self.canned = canned
        self._canned: dict | None = None
        self.files: dict[str, dict] = {}  # the Files API: id -> {object fields..., "content": bytes}
        self.before_answer = before_answer
        # The Batch API (openai_batches.py): id -> Batch object (+ bookkeeping), creation order, what each line
        # that ran was billed at Batch rates (batch id, custom_id, USD), and the knobs its module doc describes.
        self.batches: dict[str, dict] = {}
        self.batch_order: list[str] = []
        self.batch_bills: list[tuple[str, str, Decimal]] = []
        self.batches_script: collections.deque = collections.deque()
        self.batch_delay_s, self.batch_line_s = batch_delay_s, batch_line_s
        self.batch_expire_after, self.batch_fail_marker = batch_expire_after, batch_fail_marker
        self.before_batch = before_batch
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._accepted: collections.deque[float] = collections.deque()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FakeOpenAIServer(base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="openai-standin", daemon=True
        )  # short poll: stop() returns quickly
        self._thread.start()
        log.warning("%s listening on %s", BANNER, self.base_url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- request handling (called from the handler thread) ---------------------------------------

    def _check_auth(self, rec: RecordedRequest, headers) -> None:
        bearer = headers.get("Authorization", "")
        style, presented = (
            ("bearer", bearer[7:])
            if bearer.startswith("Bearer ")
            else ("api-key", headers.get("api-key"))
            if headers.get("api-key")
            else (None, None)
        )
        rec.auth = style
        if self._api_key is not None and presented != self._api_key:
            shown = f"{presented[:4]}{'*' * 10}{presented[-4:]}" if presented and len(presented) > 8 else "***"
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _scripted(self) -> None:
        with self._lock:
            item = self.script.popleft() if self.script else None
        if item is None or item == "ok":
            return
        if item == "drop":
            raise _Drop
        spec = {"status": item} if isinstance(item, int) else dict(item)
        status = spec["status"]
        headers = {}
        if "retry_after_ms" in spec:
            headers["retry-after-ms"] = str(spec["retry_after_ms"])
        if "retry_after" in spec:
            headers["retry-after"] = str(spec["retry_after"])
        for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"):
            if name in spec:
                headers[name] = str(spec[name])
        if status == 429:
            raise ApiError(
                429,
                spec.get("message", "Rate limit reached for images per min (IPM) (stand-in)."),
                type="requests",
                code=spec.get("code", "rate_limit_exceeded"),
                headers=headers,
            )
        raise ApiError(
            status,
            spec.get("message", "The server had an error while processing your request."),
            type=spec.get("type", "server_error"),
            param=spec.get("param"),
            code=spec.get("code"),
            headers=headers,
        )

    def _rate_limit(self) -> None:
        if self.rate_limit_rpm is None:
            return
        now = time.monotonic()
        with self._lock:
            while self._accepted and now - self._accepted[0] >= self.rate_window_s:
                self._accepted.popleft()
            if len(self._accepted) >= self.rate_limit_rpm:
                wait = self.rate_window_s - (now - self._accepted[0])
                raise ApiError(
                    429,
                    f"Rate limit reached for images per min (IPM): Limit {self.rate_limit_rpm}. "
                    f"Please try again in {wait:.3f}s.",
                    type="requests",
                    code="rate_limit_exceeded",
                    headers={
                        "retry-after-ms": str(max(1, round(wait * 1000))),
                        "retry-after": str(max(1, math.ceil(wait))),
                    },
                )
            self._accepted.append(now)

    @property
    def edit_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/images/edits")]

    @property
    def batch_creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches")]

    def handle(self, rec: RecordedRequest, headers, body: bytes) -> dict | RawBody:
        if self._canned is not None and rec.method == "POST" and rec.path.rstrip("/").endswith("/images/edits"):
            self._check_auth(rec, headers)  # canned (benchmarks): the first answer again, nothing parsed or made
            return self._canned
        multipart = rec.content_type.startswith("multipart/form-data")
        parts = rec.payloads if rec.parts else _parse_multipart(rec, body) if multipart else []
        rec.payloads = []  # the bytes are not kept for every recorded request
        path = rec.path.rstrip("/")
        if rec.content_type.startswith("application/json") and (body or not path.endswith("/cancel")):
            rec.json = _parse_json(body)
        self._check_auth(rec, headers)
        from backends.standins import openai_batches, openai_files  # models, files, batches: the small endpoints

        if "/batches" in path:
            return openai_batches.route(self, rec)
        if rec.method == "GET" or path.endswith("/files"):
            return openai_files.route(self, rec, parts)
        self._scripted()
        self._rate_limit()
        if not path.endswith("/images/edits"):
            raise ApiError(404, f"Invalid URL ({rec.method} {rec.path})", code="unknown_url")
        from backends.standins.openai_edit import run_edit, run_json_edit  # the API's rules and the fake "model"

        if multipart:
            answer = run_edit(self, rec, parts)
            if self.canned and not hasattr(answer, "events"):
                self._canned = _Encoded(answer)
            return answer
        if rec.json is not None:
            return run_json_edit(self, rec, rec.json)
        raise ApiError(
            400,
            "Expected a multipart/form-data or application/json body for image edits.",
            code="invalid_content_type",
        )


def _parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The JSON body must be an object.", code="invalid_json")
    return data


def _parse_multipart(rec: RecordedRequest, body: bytes) -> list[tuple[RecordedPart, bytes]]:
    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + rec.content_type.encode() + b"\r\n\r\n" + body)
    out = []
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True) or b""
        p = RecordedPart(
            name=part.get_param("name", header="content-disposition") or "",
            filename=part.get_filename(),
            content_type=part.get("content-type"),
            size=len(payload),
        )
        rec.parts.append(p)
        if p.filename is None:
            rec.fields[p.name] = payload.decode("utf-8", "replace")
        out.append((p, payload))
    return out


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeOpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API; every answer has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # request lines only: no headers, no keys
        log.debug("stand-in: " + format, *args)

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionResetError:  # the client was killed mid-connection (crash tests): nobody to answer
            self.close_connection = True

    def do_POST(self) -> None:
        owner = self.server_owner
        url = urlsplit(self.path)
        rec = RecordedRequest(
            method=self.command,
            path=url.path,
            query={k: v[-1] for k, v in parse_qs(url.query).items()},
            auth=None,
            content_type=self.headers.get("Content-Type", ""),
        )
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rec.received_at, rec.body_bytes = time.time(), len(body)
        multipart = rec.content_type.startswith("multipart/form-data")
        if multipart:  # recorded even when refused later; fields known before answering (and to hooks)
            rec.payloads = _parse_multipart(rec, body)
        with owner._lock:
            owner.requests.append(rec)
        if owner.latency_s:
            time.sleep(owner.latency_s)
        if owner.before_answer is not None:
            owner.before_answer(rec)
        extra: dict[str, str] = {}
        try:
            status, payload = 200, owner.handle(rec, self.headers, body)
        except _Drop:
            rec.status = -1
            self.close_connection = True
            return
        except ApiError as err:
            status, payload, extra = err.status, err.body(), err.headers
        if status == 200 and isinstance(payload, dict):
            rec.billed_usd = _billed(owner, rec, payload)
        rec.status, rec.answered_at = status, time.time()
        try:
            if _peer_gone(self.connection):  # writing would "succeed" into a dead socket's buffer
                raise ConnectionResetError
            self._send(status, payload, extra)
        except OSError:  # the client went away (killed): made and billed, never delivered
            self.close_connection = True
            return
        rec.delivered_at = time.time()

    do_GET = do_POST

    def _send(self, status: int, payload: dict | RawBody, headers: dict[str, str]) -> None:
        events = getattr(payload, "events", None)
        if status == 200 and events is not None:  # a streamed edit (openai_edit.StreamedEdit)
            return self._send_events(events)
        raw = isinstance(payload, RawBody)
        data = payload.data if raw else getattr(payload, "encoded", None) or json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", payload.content_type if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-editroute-standin", "openai")
        self.send_header("x-request-id", "req_standin_" + hashlib.sha1(data).hexdigest()[:12])
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: list[dict]) -> None:
        """Server-sent events, chunked (the connection stays open for the next request), spaced by
        `stream_interval_s` as a model's partial images are."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-editroute-standin", "openai")
        self.send_header("x-request-id", "req_standin_stream")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i and self.server_owner.stream_interval_s:
                    time.sleep(self.server_owner.stream_interval_s)
                data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away mid-stream (the edit was made, and is billed, all the same)
            self.close_connection = True


class _Encoded(dict):
    """An answer with its JSON encoded once (a canned answer is sent many times)."""

    def __init__(self, answer: dict) -> None:
        super().__init__(answer)
        self.encoded = json.dumps(answer).encode()


def _peer_gone(sock) -> bool:
    """The client closed its end (a killed process's sockets are closed by the kernel): EOF or reset is waiting."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _billed(owner: FakeOpenAIServer, rec: RecordedRequest, payload: dict) -> Decimal:
    usage = payload.get("usage") or {}
    details, out = usage.get("input_tokens_details") or {}, usage.get("output_tokens_details") or {}
    prices = owner.prices.model(rec.fields.get("model") or (rec.json or {}).get("model") or DEFAULT_MODEL)
    return token_cost(
        prices,
        text_in=int(details.get("text_tokens") or 0),
        image_in=int(details.get("image_tokens") or 0),
        image_out=int(out.get("image_tokens") or 0),
        text_out=int(out.get("text_tokens") or 0),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=BANNER)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    ap.add_argument("--rpm", type=int, default=None, help="answer 429 above this many requests per minute")
    ap.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    ap.add_argument(
        "--canned", action="store_true", help="answer every edit after the first with the first's answer (benchmarks)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = FakeOpenAIServer(
        args.port,
        host=args.host,
        latency_s=args.latency,
        rate_limit_rpm=args.rpm,
        api_key=args.api_key,
        canned=args.canned,
    ).start()
    print(
        f"{BANNER}\n  base_url: {server.base_url}\n  try: editroute edit --backend openai "
        f"--base-url {server.base_url} --image in.png --prompt '...' --out out/\n  Ctrl-C to stop",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":  # run the imported module's main, so openai_edit and this share one ApiError class
    from backends.standins.openai_server import main as _main

    raise SystemExit(_main())


__all__ = ["FakeOpenAIServer", "RecordedRequest", "RecordedPart", "ApiError", "RawBody"]
