"""A loopback STAND-IN for Adobe Firefly Services and Adobe IMS (not the real services), speaking their wire formats.

  POST /ims/token/v3                 client-credentials form -> {access_token, token_type, expires_in}
  POST /v2/storage/image             raw image bytes -> {"images": [{"id": <uuid4>}]} (15 MB, png/jpeg/webp/...)
  POST /v3/images/fill-async         FillImageRequestV3 -> 202 {jobId, statusUrl, cancelUrl} + Link header
  POST /v3/images/expand-async       ExpandImageRequestV3 -> 202, as above
  POST /v4/images/generate-async     Image 5 (x-model-version: image5) -> 200 {links: {result: {href}}, progress}
  GET  /v3/status/{jobId}            pending -> running -> succeeded {result: {outputs: [{seed, image: {url}}]}}
                                     (or failed | cancelled | timeout, with error_code)
  PUT  /v3/cancel/{jobId}
  GET  /presigned/{id}?X-Amz-...     the result bytes, S3-style: 403 AccessDenied XML once expired, 400 if sent
                                     any Authorization header (S3 allows one auth mechanism)
Every Firefly call needs `Authorization: Bearer <issued token>` (else 401 `401013 Oauth token is not valid`)
and `x-api-key: <client id>` (else 403 `403003 Api Key is invalid`). Errors use Firefly's envelope
`{error_code, message, validation_errors?}`; 429 carries `retry-after` and `x-access-rate-limit-level`, 403
`x-access-error`. The fake fill paints ONLY where the mask is white (Firefly's polarity), so a client that sends
OpenAI's mask unconverted gets its edit in the wrong place. Prompt words switch on failures (`TRIGGERS`);
`submit_script` / `status_script` items (`500`, `"drop"`, `{"status": 429, "retry_after": "1"}`) script the
next submit / status answers. Assumptions beyond the published spec, enforced to keep clients conservative:
the mask must have the source's dimensions; fill answers in JPEG (`output_mime`).

    with FakeFireflyServer() as ff:
        FireflyEditBackend("ff", Settings(base_url=ff.base_url, token_url=ff.token_url))
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from backends.standins.loopback import (
    LoopbackServer,
    Reply,
    Request,
    RequestWindow,
    StandinService,
    json_reply,
    next_failure,
    serve_until_interrupted,
)

BANNER = "STAND-IN for Adobe Firefly Services + IMS (loopback fake, not the real services)"
TRIGGERS = {
    "unsafe-output": ("failed", "output_media_unsafe", "The generated content was flagged as unsafe."),
    "fail-job": ("failed", "runtime_error", "Internal error while generating."),
    "timeout-job": ("timeout", "timeout_error", "The job timed out."),
}


class FireflyError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        validation: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.validation = (
            status,
            code,
            message,
            headers or {},
            validation,
        )

    def reply(self) -> Reply:
        body: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if self.validation is not None:
            body["validation_errors"] = self.validation
        return json_reply(self.status, body, self.headers)


def invalid(loc: list, msg: str, type_: str = "value_error") -> FireflyError:
    return FireflyError(
        422,
        "validation_error",
        "request body validation error",
        validation=[{"loc": ["body", *loc], "msg": msg, "type": type_}],
    )


@dataclass
class Recorded:
    method: str
    path: str
    kind: str  # token | upload | fill | expand | instruct | status | download | cancel | other
    bearer: bool  # an Authorization header came (its value is never kept)
    status: int = 0


@dataclass
class Job:
    kind: str
    body: dict
    polls: int = 0
    outputs: list[tuple[int, bytes]] = field(default_factory=list)  # (seed, image bytes), made at submit
    outcome: tuple[str, str, str] | None = None  # (status, error_code, message) for a job that does not succeed


class FakeFireflyServer(StandinService):
    banner = BANNER

    def __init__(
        self,
        *,
        client_id: str = "ff-standin-client",
        client_secret: str = "ff-standin-secret",
        token_ttl_s: int = 86399,
        polls_to_finish: int = 2,
        output_mime: str = "image/jpeg",
        url_ttl_s: float = 3600.0,
        status_retry_after: str | None = None,
        submit_script: list | None = None,
        status_script: list | None = None,
        rate_limit_rpm: int | None = None,
        rate_window_s: float = 60.0,
        port: int = 0,
    ) -> None:
        self.client_id, self._client_secret, self.token_ttl_s = client_id, client_secret, token_ttl_s
        self.polls_to_finish, self.output_mime, self.url_ttl_s = polls_to_finish, output_mime, url_ttl_s
        self.status_retry_after = status_retry_after
        self.submit_script = collections.deque(submit_script or [])
        self.status_script = collections.deque(status_script or [])
        # Adobe's per-organisation limit (4 per minute by default) counts every Firefly API request: uploads,
        # submits and status polls alike (not IMS tokens or pre-signed downloads, other hosts)
        self.rate_limit_rpm, self.rate_window_s = rate_limit_rpm, rate_window_s
        self._window = RequestWindow(rate_limit_rpm, rate_window_s)
        self.requests: list[Recorded] = []
        self.uploads: dict[str, tuple[str, bytes]] = {}
        self.jobs: dict[str, Job] = {}
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._urls: dict[str, tuple[bytes, float]] = {}  # presigned id -> (bytes, expiry)
        self.issued: list[str] = []  # every token handed out, so tests can check none leaks
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._route, name="firefly", port=port)

    @property
    def base_url(self) -> str:
        return self._server.root_url

    @property
    def token_url(self) -> str:
        return self._server.root_url + "/ims/token/v3"

    # ---- test switches ------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def expire_results(self) -> None:
        with self._lock:
            self._urls = {k: (v[0], 0.0) for k, v in self._urls.items()}

    def submits(self) -> list[Recorded]:
        """Job submissions the server accepted (what Adobe bills)."""
        return [r for r in self.requests if r.kind in ("fill", "expand", "instruct") and r.status in (200, 202)]

    def count(self, kind: str) -> int:
        return sum(r.kind == kind for r in self.requests)

    # ---- request handling (handler threads) --------------------------------------------------------

    def _route(self, req: Request) -> Reply:
        from backends.standins import firefly_jobs as jobs  # the API's rules and the fake "model"

        kind = _kind(req)
        rec = Recorded(req.method, req.path, kind, bearer="authorization" in req.headers)
        with self._lock:
            self.requests.append(rec)
        try:
            if kind == "token":
                reply = self._token(req)
            elif kind == "download":
                reply = jobs.download(self, req)
            else:
                self._check_auth(req)
                self._rate_limit()
                self._scripted(
                    self.submit_script
                    if kind in ("fill", "expand", "instruct")
                    else self.status_script
                    if kind == "status"
                    else None
                )
                reply = jobs.handle(self, kind, req)
        except FireflyError as err:
            reply = err.reply()
        rec.status = reply.status
        return reply

    def _token(self, req: Request) -> Reply:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return json_reply(400, {"error": "unsupported_grant_type", "error_description": "unsupported grant"})
        if form.get("client_id") != self.client_id:
            return json_reply(400, {"error": "invalid_client", "error_description": "invalid client_id parameter"})
        if form.get("client_secret") != self._client_secret:
            return json_reply(401, {"error": "invalid_client", "error_description": "invalid client_secret parameter"})
        if "firefly_api" not in form.get("scope", "").split(","):
            return json_reply(400, {"error": "invalid_scope", "error_description": "invalid scope"})
        token = "eyJ-standin-" + uuid.uuid4().hex
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_s
            self.issued.append(token)
        return json_reply(200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl_s})

    def _check_auth(self, req: Request) -> None:
        auth = req.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self._lock:
            valid = token is not None and self._tokens.get(token, 0.0) > time.monotonic()
        if not valid:
            raise FireflyError(401, "401013", "Oauth token is not valid")
        if req.headers.get("x-api-key") != self.client_id:
            raise FireflyError(403, "403003", "Api Key is invalid")

    def _rate_limit(self) -> None:
        wait = self._window.admit()
        if wait is not None:
            raise FireflyError(
                429,
                "rate_limited",
                "Too many requests",
                headers={"retry-after": f"{wait:.3f}", "x-access-rate-limit-level": "org"},
            )

    def _scripted(self, script: collections.deque | None) -> None:
        if script is None:
            return
        spec = next_failure(script, self._lock)
        if spec is None:
            return
        status = spec["status"]
        if status == 429:
            raise FireflyError(
                429,
                "rate_limited",
                "Too many requests",
                headers={"retry-after": str(spec.get("retry_after", "1")), "x-access-rate-limit-level": "org"},
            )
        if status == 403:
            raise FireflyError(
                403,
                "access_error",
                "Access denied",
                headers={"x-access-error": spec.get("access_error", "quota_exhausted")},
            )
        raise FireflyError(status, spec.get("code", "runtime_error"), spec.get("message", "Internal server error"))


def _kind(req: Request) -> str:
    p = req.path
    if p == "/ims/token/v3":
        return "token"
    if p.startswith("/presigned/"):
        return "download"
    return {
        "/v2/storage/image": "upload",
        "/v3/images/fill-async": "fill",
        "/v3/images/expand-async": "expand",
        "/v4/images/generate-async": "instruct",
    }.get(p) or ("status" if p.startswith("/v3/status/") else "cancel" if p.startswith("/v3/cancel/") else "other")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=BANNER)
    ap.add_argument("--port", type=int, default=8767)
    ap.add_argument("--client-id", default="ff-standin-client")
    ap.add_argument("--client-secret", default="ff-standin-secret")
    args = ap.parse_args(argv)
    server = FakeFireflyServer(client_id=args.client_id, client_secret=args.client_secret, port=args.port)
    return serve_until_interrupted(
        server, lambda s: [BANNER, f"  base_url: {s.base_url}", f"  token_url: {s.token_url}", "  Ctrl-C to stop"]
    )


if __name__ == "__main__":  # run the imported module's main, so firefly_* helpers and this share one error class
    from backends.standins.firefly_server import main as _main

    raise SystemExit(_main())


__all__ = ["BANNER", "FakeFireflyServer", "FireflyError", "Job", "Recorded", "TRIGGERS", "invalid"]
