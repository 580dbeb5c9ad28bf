"""The HTTP plumbing the hosted stand-ins share: a threaded server on 127.0.0.1 (an ephemeral port by default) for
any handler class, as a context manager (`LoopbackHTTP`; the OpenAI stand-in brings its own handler, for streaming
and crash timing); one that hands each request to a `route(Request) -> Reply` function (`LoopbackServer`: Gemini,
Firefly); the start/stop/`with` of a stand-in built on either (`StandinService`); their rate window
(`RequestWindow`) and the reading of their scripted failures (`next_failure`).

    with LoopbackServer(route, name="gemini") as srv:
        srv.root_url   # http://127.0.0.1:<port>

Every reply carries `x-editroute-standin: <name>`. A route may raise `Drop` to close the connection without an
answer (a scripted network failure). Request lines are logged at DEBUG; headers and bodies never are.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
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


def next_failure(script: collections.deque, lock: threading.Lock) -> dict | None:
    """The stand-ins' scripted failures, one item per request: "ok" (or an empty script) answers normally (None),
    "drop" raises `Drop`, a status code or a dict with "status" (and what that service's error takes) is returned
    as that dict for the caller to raise in its service's error envelope."""
    with lock:
        item = script.popleft() if script else None
    if item is None or item == "ok":
        return None
    if item == "drop":
        raise Drop
    return {"status": item} if isinstance(item, int) else dict(item)


class LoopbackHTTP:
    """Serves `handler` (its `server_owner` set to `owner`) on a daemon thread; port 0 picks a free one."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], owner: Any, *, name: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.handler, self.owner, self.name, self.host, self.port = handler, owner, name, host, port
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        owner = self.owner

        class Handler(self.handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(  # short poll: stop() returns quickly
            target=self._httpd.serve_forever, args=(0.05,), name=f"{self.name}-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopbackServer(LoopbackHTTP):
    """`LoopbackHTTP` handing each request to `route(Request) -> Reply`."""

    def __init__(self, route: Callable[[Request], Reply], *, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, self, name=name, host=host, port=port)
        self.route = route


class StandinService:
    """Start, stop and `with` for a stand-in that serves through `self._server` (a `LoopbackHTTP`); starting
    says `banner` and where it listens, so nobody mistakes a fake for the real service."""

    banner: ClassVar[str]
    base_url: str
    _server: LoopbackHTTP

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:  # the real one once started (port 0 picks a free one)
        return self._server.port

    def start(self) -> Self:
        self._server.start()
        logging.getLogger(type(self).__module__).warning("%s listening on %s", self.banner, self.base_url)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
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
