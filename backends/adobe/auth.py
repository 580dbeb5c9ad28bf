"""Adobe IMS server-to-server (OAuth client credentials) tokens for Firefly Services.

`POST {token_url}` with a form `grant_type=client_credentials, client_id, client_secret, scope` answers
`{"access_token", "token_type": "bearer", "expires_in": <seconds>}` (24 h). `ImsTokens` keeps one token per
backend, shared by its threads, until shortly before it expires; `invalidate()` after a 401 makes the next
`token()` fetch a new one. Every Firefly call then sends `Authorization: Bearer <token>` and `x-api-key: <client id>`.
Docs: https://developer.adobe.com/firefly-services/docs/firefly-api/getting-started/
The client secret and the token live only in memory: never logged, never in an error or a repr.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from backends.errors import BackendMisconfigured, BackendUnavailable

log = logging.getLogger(__name__)

DEFAULT_TOKEN_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPE = "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"
REFRESH_MARGIN_S = 300.0  # fetch a new token this long before the old one expires


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str
    source: str  # where they came from, for messages ("$FIREFLY_SERVICES_CLIENT_ID/..."); never the values

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r})"


class ImsTokens:
    def __init__(self, token_url: str, scope: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url, self.scope, self._clock = token_url, scope, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetched = 0  # how many tokens this process asked IMS for

    def __repr__(self) -> str:
        return f"ImsTokens(token_url={self.token_url!r}, cached={self._token is not None})"

    def token(self, http: httpx.Client, creds: Credentials) -> str:
        with self._lock:  # one fetch at a time: threads waiting for a token reuse the one just fetched
            if self._token is None or self._clock() >= self._expires_at - REFRESH_MARGIN_S:
                self._token, lifetime = _fetch(http, self.token_url, self.scope, creds)
                self._expires_at = self._clock() + lifetime
                self.fetched += 1
                log.info("Firefly: new IMS access token (valid %.0f s)", lifetime)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` (a call was refused with 401); a newer token someone else fetched is kept."""
        with self._lock:
            if self._token == token:
                self._token = None


def _fetch(http: httpx.Client, url: str, scope: str, creds: Credentials) -> tuple[str, float]:
    form = {
        "grant_type": "client_credentials",
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "scope": scope,
    }
    try:
        response = http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.InvalidURL as exc:
        raise BackendMisconfigured(f"bad token_url {url!r}: {exc}") from None
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"cannot reach Adobe IMS at {url}: {exc.__class__.__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status_code == 200 and isinstance(body.get("access_token"), str):
        return body["access_token"], float(body.get("expires_in") or 3600)
    error = str(body.get("error") or f"HTTP {response.status_code}")
    desc = str(body.get("error_description") or "").replace(creds.client_secret, "***")
    what = f"Adobe IMS refused the client credentials from {creds.source} ({error}{': ' + desc if desc else ''})"
    if response.status_code >= 500:
        raise BackendUnavailable(f"Adobe IMS failed (HTTP {response.status_code})")
    raise BackendMisconfigured(
        what + "; check the client id and secret, and that the project has the Firefly "
        "API with the firefly_api and ff_apis scopes"
    )
