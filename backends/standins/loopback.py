"""The HTTP plumbing the Gemini and Firefly stand-ins share: a threaded server on 127.0.0.1 (an ephemeral port by
default) that hands each request to a `route(Request) -> Reply` function, as a context manager.

    with LoopbackServer(route, name="gemini") as srv:
        srv.root_url   # http://127.0.0.1:<port>

Every reply carries `x-editroute-standin: <name>`. A route may raise `Drop` to close the connection without an
answer (a scripted network failure). Request lines are logged at DEBUG; headers and bodies never are.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


class RequestWindow:
    """A provider's rate limit as the stand-ins enforce it: at most `limit` requests accepted in any `window_s`."""

    def __init__(self, limit: int | None, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._accepted: list[float] = []
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """None: accepted (and counted); else the seconds until one would be (the caller answers 429)."""
        if self.limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            self._accepted = [t for t in self._accepted if now - t < self.window_s]
            if len(self._accepted) >= self.limit:
                return max(self.window_s - (now - self._accepted[0]), 0.001)
            self._accepted.append(now)
            return None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=dict(headers or {}))


def serve_until_interrupted(server: Any, lines: Callable[[Any], list[str]]) -> int:
    """For a stand-in's `python -m` entry point: start it, print `lines(server)` (where it listens), serve until
    Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server.start()
    print("\n".join(lines(server)), flush=True)  # a `python -m` entry point owns the terminal
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


class Drop(Exception):
    """Close the connection without answering."""


class LoopbackServer:
    def __init__(self, route: Callable[[Request], Reply], *, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.route, self.name, self.host, self.port = route, name, host, port
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LoopbackServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"{self.name}-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_owner: LoopbackServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # request lines only
        log.debug("%s stand-in: " + format, self.server_owner.name, *args)

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(
            method=self.command,
            path=url.path,
            query={k: v[-1] for k, v in parse_qs(url.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            reply = self.server_owner.route(request)
        except Drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("x-editroute-standin", self.server_owner.name)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = _serve
