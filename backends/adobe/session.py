"""The HTTP side of a Firefly backend: authenticated calls with retries, upload, submit, poll, download.

Retry rules, chosen for money: uploads, status polls and downloads are free and safe to repeat, so any transport
failure, 408, 429 or 5xx is retried. A job submit is retried only when its answer proves no job was made (429,
5xx) or the connection never opened; a submit whose answer was lost (read timeout, dropped connection) is NOT
resent: its outcome is unknown, and it is raised as such, to be counted as a possible charge.
A 401 fetches a new IMS token once and repeats the call; a second 401 is a configuration error.
Pre-signed result URLs are fetched without our credentials (they are S3 URLs; the token must not leave Adobe).
Every request to the Firefly API (upload, submit, status poll, and each retry) first waits for the account's
`RequestPacer` (`requests_per_minute`): Adobe's limit counts requests, not jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from backends import hosted_http
from backends.adobe import wire
from backends.adobe.auth import Credentials, ImsTokens
from backends.adobe.journal import JobRef
from backends.errors import BackendMisconfigured, BackendUnavailable, OutcomeUnknown

log = logging.getLogger(__name__)

SUBMIT_PATHS = {
    "fill": "/v3/images/fill-async",
    "expand": "/v3/images/expand-async",
    "instruct": "/v4/images/generate-async",
}


class ResultExpired(Exception):
    """A pre-signed result URL answered 4xx: it expired (they live one hour) or was never valid."""


class FireflySession:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        http: Callable[[], httpx.Client],
        tokens: ImsTokens,
        max_retries: int,
        poll_interval_s: float,
        max_poll_interval_s: float,
        poll_timeout_s: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        pacer: hosted_http.RequestPacer | None = None,
    ) -> None:
        self.name, self.base_url, self._http, self.tokens = name, base_url.rstrip("/"), http, tokens
        self.pacer = pacer
        self.max_retries = max_retries
        self.poll_interval_s, self.max_poll_interval_s, self.poll_timeout_s = (
            poll_interval_s,
            max_poll_interval_s,
            poll_timeout_s,
        )
        self._sleep, self._clock = sleep, clock

    # ---- one authenticated call ---------------------------------------------------------------------

    def call(
        self, method: str, url: str, creds: Credentials, *, what: str, replay_safe: bool = True, **kwargs: Any
    ) -> httpx.Response:
        attempt, refreshed = 0, False
        extra_headers = kwargs.pop("headers", {})
        while True:
            token = self.tokens.token(self._http(), creds)
            headers = {**extra_headers, "Authorization": f"Bearer {token}", "x-api-key": creds.client_id}
            if self.pacer is not None:
                self.pacer.acquire(self._sleep)
            try:
                response = self._http().request(method, url, headers=headers, **kwargs)
            except httpx.InvalidURL as exc:
                raise BackendMisconfigured(f"bad base_url {self.base_url!r}: {exc}") from None
            except httpx.HTTPError as exc:
                unsent = hosted_http.never_sent(exc)
                if attempt < self.max_retries and (unsent or (replay_safe and isinstance(exc, httpx.TransportError))):
                    self._wait(attempt, None, f"{what}: {exc.__class__.__name__}")
                    attempt += 1
                    continue
                if not replay_safe and not unsent:
                    raise OutcomeUnknown(
                        f"{what}: the answer was lost ({exc.__class__.__name__}); the job may "
                        f"have been created and billed: outcome unknown"
                    ) from None
                raise BackendUnavailable(f"{what}: connection failed ({exc.__class__.__name__}: {exc})") from None
            if response.status_code < 300:
                return response
            if response.status_code == 401 and not refreshed:  # expired or revoked: one new token, one more try
                self.tokens.invalidate(token)
                refreshed = True
                continue
            body = _json(response)
            if attempt < self.max_retries and wire.should_retry(response.status_code, response.headers):
                self._wait(attempt, wire.retry_after(response.headers), f"{what}: HTTP {response.status_code}")
                attempt += 1
                continue
            raise wire.map_status_error(
                response.status_code,
                response.headers,
                body,
                what=what,
                creds_source=creds.source,
                secrets=(creds.client_secret, token),
            )

    def _wait(self, attempt: int, server_wait: float | None, why: str) -> None:
        delay = hosted_http.backoff_delay(attempt, server_wait, cap=16.0)
        log.warning("%s: %s; retry %d/%d in %.2fs", self.name, why, attempt + 1, self.max_retries, delay)
        self._sleep(delay)

    # ---- the steps of a job -------------------------------------------------------------------------

    def upload(self, data: bytes, mime: str, creds: Credentials) -> str:
        r = self.call(
            "POST",
            f"{self.base_url}/v2/storage/image",
            creds,
            what="upload",
            content=data,
            headers={"Content-Type": mime},
        )
        try:
            return str(r.json()["images"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendUnavailable("upload: the answer has no images[0].id") from None

    def submit(self, mode: str, body: dict[str, Any], creds: Credentials) -> tuple[str, str]:
        headers = {"x-model-version": "image5"} if mode == "instruct" else {}
        r = self.call(
            "POST",
            self.base_url + SUBMIT_PATHS[mode],
            creds,
            what=f"{mode} submit",
            replay_safe=False,
            json=body,
            headers=headers,
        )
        job_id, status_url = wire.parse_accept(_json(r))
        host, ours = urlsplit(status_url).hostname or "", urlsplit(self.base_url).hostname or ""
        if host != ours and not host.endswith(".adobe.io"):  # our token goes to this URL on every poll
            raise OutcomeUnknown(  # the job was made all the same: a possible charge
                f"{mode} submit: job {job_id} has a status URL on an unexpected host {host!r}, so it is not "
                "followed: outcome unknown"
            )
        return job_id, status_url

    def poll(self, ref: JobRef, creds: Credentials) -> wire.JobState:
        """Poll until the job finishes: 1 s growing x1.5 to `max_poll_interval_s`, or the server's retry-after."""
        deadline = self._clock() + self.poll_timeout_s
        interval = self.poll_interval_s
        while True:
            r = self.call("GET", ref.status_url, creds, what=f"status of job {ref.job_id}")
            state = wire.parse_job(_json(r))
            if state.finished:
                return state
            left = deadline - self._clock()
            if left <= 0:
                raise BackendUnavailable(
                    f"Firefly job {ref.job_id} still {state.status} after "
                    f"{self.poll_timeout_s:g} s; it is in the journal: a rerun resumes polling"
                )
            self._sleep(min(wire.retry_after(r.headers) or interval, left))
            interval = min(interval * 1.5, self.max_poll_interval_s)

    def download(self, url: str) -> bytes:
        """GET a pre-signed URL, with no credentials; transient failures retried, 4xx is `ResultExpired`."""
        attempt = 0
        while True:
            try:
                r = self._http().get(url)
            except httpx.HTTPError as exc:
                if attempt < self.max_retries:
                    self._wait(attempt, None, f"download: {exc.__class__.__name__}")
                    attempt += 1
                    continue
                raise BackendUnavailable(f"download of a result failed ({exc.__class__.__name__})") from None
            if r.status_code == 200 and r.content:
                return r.content
            if 400 <= r.status_code < 500:
                raise ResultExpired(f"HTTP {r.status_code}")
            if attempt < self.max_retries:
                self._wait(attempt, None, f"download: HTTP {r.status_code}")
                attempt += 1
                continue
            raise BackendUnavailable(f"download of a result failed (HTTP {r.status_code})")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]
