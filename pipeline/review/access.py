"""Who may use the review page, and from where.

Without API keys (`editroute review`) the page answers only requests whose Host is a loopback name, so a web page
on another name that resolves to 127.0.0.1 (DNS rebinding) gets nothing. With keys (the serve mount) a browser logs
in once with a key and a name and gets a random session token in an HttpOnly, SameSite=Strict cookie; scripts may
send `Authorization: Bearer KEY` (and `x-editroute-reviewer: NAME`). Keys are compared in constant time and never
stored or logged. A write must come from the page itself (`same_origin`).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence

from fastapi import Request

COOKIE = "editroute_review"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


class ReviewError(Exception):
    """An answer with this HTTP status and message (JSON `{"error": message}`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Access:
    """Who may use the page: anyone on loopback (no keys), or a key holder with a session."""

    def __init__(self, api_keys: Sequence[str], reviewer: str | None) -> None:
        self._keys = [k.encode() for k in api_keys]
        self.reviewer = reviewer
        self._sessions: dict[str, str] = {}

    @property
    def keyed(self) -> bool:
        return bool(self._keys)

    def key_ok(self, key: str) -> bool:
        presented = key.strip().encode()
        ok = False
        for k in self._keys:  # every key compared, in constant time
            ok |= hmac.compare_digest(presented, k)
        return ok and bool(presented)

    def login(self, key: str, name: str) -> str | None:
        if not self.key_ok(key):
            return None
        token = secrets.token_urlsafe(32)
        self._sessions[token] = name.strip()[:80] or "reviewer"
        return token

    def who(self, request: Request) -> str | None:
        """The reviewer behind this request, or None (not let in)."""
        if not self.keyed:
            host = _hostname(request.headers.get("host") or "")
            return self.reviewer if host in LOOPBACK_HOSTS else None
        token = request.cookies.get(COOKIE)
        if token and token in self._sessions:
            return self._sessions[token]
        scheme, _, bearer = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self.key_ok(bearer):
            return request.headers.get("x-editroute-reviewer") or "api"
        return None


def same_origin(request: Request) -> None:
    """A write must come from this page: a JSON body (a cross-site form cannot send one without CORS) and, when
    the browser says where it comes from, this host."""
    if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/json":
        raise ReviewError(415, "send the decision as application/json")
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise ReviewError(403, "cross-origin request refused")


def _hostname(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8765" -> "127.0.0.1", "[::1]:8765" -> "[::1]"."""
    return host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
