"""What hosted backends do the same way about HTTP: the server's requested wait, backoff with jitter, which
transport failures may be retried, httpx's exceptions translated into `backends.errors`, and the pacing of
upstream requests (`requests_per_minute`: `RequestPacer`, shared per account by `shared_pacer`).

Each backend keeps its own `map_status_error` (every service words its errors differently); these are the parts
that do not differ (`backends.openai.wire` adds OpenAI's `retry-after-ms` and its SDK's 0.5 s first delay).
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable

import httpx

from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, OutcomeUnknown

MAX_RETRY_AFTER = 120.0  # a longer server-requested wait is not slept through: the runner reschedules the job


def parse_retry_after(raw: str | None) -> float | None:
    """A `Retry-After` value (seconds, or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def backoff_delay(
    attempt: int,
    server_wait: float | None = None,
    *,
    initial: float = 1.0,
    cap: float = 8.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry number `attempt` (0-based): the server's wait if it gave one (<= 120 s), else
    `initial` doubling to `cap`, minus up to 25 % jitter so that many clients do not retry in lockstep."""
    if server_wait is not None and 0 < server_wait <= MAX_RETRY_AFTER:
        return server_wait
    return min(initial * 2**attempt, cap) * (1 - 0.25 * rand())


def is_retryable_transport_error(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
    )


def never_sent(exc: httpx.HTTPError) -> bool:
    """The request cannot have reached the server: resending it cannot make a second charge."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


def answer_lost(exc: httpx.HTTPError) -> bool:
    """The request went out and its answer never came (read timeout, connection dropped while waiting): the
    server may have done, and billed, the work."""
    return isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError))


def map_transport_error(exc: httpx.HTTPError, *, timeout_s: float) -> EditError:
    """httpx exceptions -> our tree. Bad URLs are configuration; timeouts and dropped connections are outages,
    and `OutcomeUnknown` when the request had gone out (a possible charge)."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        return BackendMisconfigured(f"cannot send to the configured base_url: {exc.__class__.__name__}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        message = f"timed out ({exc.__class__.__name__}; limit {timeout_s:g} s)"
    else:
        message = f"connection failed: {exc.__class__.__name__}: {exc}"
    if answer_lost(exc):
        return OutcomeUnknown(message + "; the request went out and no answer came: it may have been billed")
    return BackendUnavailable(message)


class LazyClient:
    """A backend's one `httpx.Client`, built on first use (so constructing a backend stays cheap and needs no
    network) and shared by the runner's threads; an injected client (tests: MockTransport) is used as is and
    left open for its owner."""

    def __init__(self, client: httpx.Client | None, *, timeout_s: float, connect_timeout_s: float) -> None:
        self._client, self._owned = client, client is None
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._owned and self._client is not None:
                self._client.close()
                self._client = None


class RequestPacer:
    """Spaces upstream HTTP requests evenly so that no more than `per_minute` start in any minute (no bursts: some
    providers enforce a per-minute limit over shorter windows). A backend asks before EVERY request it sends
    (retries, each of a job's n calls, uploads and status polls included), from any thread; the caller's `sleep`
    does the waiting (a test's no-op sleep makes pacing free)."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def interval_s(self) -> float:
        return 60.0 / self.per_minute

    def tighten(self, per_minute: float) -> None:
        """Keep the stricter of two limits (two backends on one account share one pacer)."""
        with self._lock:
            self.per_minute = min(self.per_minute, per_minute)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait until this request may start; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval_s
        if start > now:
            sleep(start - now)
        return start - now


_PACERS: dict[tuple[str, ...], RequestPacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(account: tuple[str, ...], per_minute: float | None) -> RequestPacer | None:
    """The one pacer of a provider account in this process (None: no limit set). `account` names what the
    provider's limit counts against, e.g. ("firefly", base_url, where the client id is read from): backends that
    share it share its limit, at the stricter of their `requests_per_minute`."""
    if per_minute is None:
        return None
    with _PACERS_LOCK:
        pacer = _PACERS.get(account)
        if pacer is None:
            pacer = _PACERS[account] = RequestPacer(per_minute)
        else:
            pacer.tighten(per_minute)
        return pacer
