"""The OpenAI stand-in's HTTP side: what it records of each request (`RecordedRequest`, `RecordedPart`), the
error envelope (`ApiError`), body parsing, and the handler that records, times and sends each answer, JSON or
server-sent events, noting when an answer was made and whether its last byte reached a client still there (crash
tests count on that). What the API does with a request is `openai_server.FakeOpenAIServer.handle`'s."""

from __future__ import annotations

import hashlib
import json
import logging
import select
import socket
import time
from dataclasses import dataclass, field
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from backends.standins.loopback import Drop

if TYPE_CHECKING:
    from backends.standins.openai_server import FakeOpenAIServer

log = logging.getLogger(__name__)


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


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The JSON body must be an object.", code="invalid_json")
    return data


def parse_multipart(rec: RecordedRequest, body: bytes) -> list[tuple[RecordedPart, bytes]]:
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


class OpenAIHandler(BaseHTTPRequestHandler):
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
            rec.payloads = parse_multipart(rec, body)
        with owner._lock:
            owner.requests.append(rec)
        if owner.latency_s:
            time.sleep(owner.latency_s)
        if owner.before_answer is not None:
            owner.before_answer(rec)
        extra: dict[str, str] = {}
        try:
            status, payload = 200, owner.handle(rec, self.headers, body)
        except Drop:
            rec.status = -1
            self.close_connection = True
            return
        except ApiError as err:
            status, payload, extra = err.status, err.body(), err.headers
        if status == 200 and isinstance(payload, dict):
            rec.billed_usd = owner.bill(rec, payload)
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


class Encoded(dict):
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
