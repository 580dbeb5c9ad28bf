"""Which job a request belongs to: a new one, its own first try's (an SDK retry), or its Idempotency-Key's.

The OpenAI SDK sends no idempotency key and no id that survives its retries (openai-python 3.63 `_base_client.py`:
`_idempotency_header = None`); what it does send is `x-stainless-retry-count` (0 on a first try, N on its Nth
retry) and `x-stainless-read-timeout`. So a retry is matched to its first try by what cannot differ between them:
the request's content and model, the caller (API key) and the client program (`client_fingerprint`: address,
User-Agent and the SDK's `x-stainless-*` platform headers), and only while the first try could still be waiting
for its answer:

- it arrived within the retry window (`ServeSettings.join_window_s`: the client's read timeout plus backoff per
  retry), and
- no answer for its job reached a client (an answered job was received: the retry of an identical *later*
  request, whose own first try was lost on the way, is a new edit, billed), and
- it was not cancelled (a stream whose client went away).

`Tries` remembers the first tries of this process; after a restart the ledger's newest job of that content stands
in for it (joined only while not done: whether a done job's answer was delivered before the restart is unknown,
so it is taken as delivered and the retry runs anew).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

CLIENT_HEADERS = (
    "user-agent",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-async",
)
MAX_TRIES = 100_000  # first tries remembered (each ~200 bytes); older ones fall back to the ledger


def sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def client_fingerprint(headers: Mapping[str, str], host: str | None) -> str:
    """The same for every try of one SDK client's request; different for another program or machine."""
    return sha(host or "", *(headers.get(h, "") for h in CLIENT_HEADERS))[:16]


def retry_count(headers: Mapping[str, str]) -> int:
    """`x-stainless-retry-count`: 0 on an OpenAI SDK's first try, N on its Nth automatic retry (absent or bad: 0)."""
    try:
        return max(0, int(headers.get("x-stainless-retry-count") or 0))
    except ValueError:
        return 0


def read_timeout(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["x-stainless-read-timeout"])
    except (KeyError, ValueError):
        return None


@dataclass
class _Try:
    key: str
    arrived: float  # time.monotonic()
    answered: bool = False
    cancelled: bool = False


class Tries:
    """First tries by content prefix (`http:<hash>:`), newest last, and which job keys were answered."""

    def __init__(self, max_tries: int = MAX_TRIES) -> None:
        self._by_prefix: OrderedDict[str, list[_Try]] = OrderedDict()
        self._by_key: dict[str, _Try] = {}
        self._lock = threading.Lock()
        self._max = max_tries

    def first_try(self, prefix: str) -> str:
        """A new job key for a first try of this content."""
        entry = _Try(f"{prefix}{uuid.uuid4().hex}", time.monotonic())
        with self._lock:
            self._by_prefix.setdefault(prefix, []).append(entry)
            self._by_prefix.move_to_end(prefix)
            self._by_key[entry.key] = entry
            while len(self._by_key) > self._max:
                _, old = self._by_prefix.popitem(last=False)
                for t in old:
                    self._by_key.pop(t.key, None)
        return entry.key

    def joinable(self, prefix: str, window_s: float) -> str | None:
        """The newest first try of this content that a retry may join, if any (None: not known here)."""
        now = time.monotonic()
        with self._lock:
            for entry in reversed(self._by_prefix.get(prefix, ())):
                if now - entry.arrived > window_s:
                    return ""  # known, and too old: a new job
                if not entry.answered and not entry.cancelled:
                    return entry.key
            return "" if prefix in self._by_prefix else None

    def answered(self, key: str) -> None:
        with self._lock:
            if (entry := self._by_key.get(key)) is not None:
                entry.answered = True

    def cancelled(self, key: str) -> None:
        with self._lock:
            if (entry := self._by_key.get(key)) is not None:
                entry.cancelled = True


class Keys:
    """Idempotency-Key -> the job key it was first used with (remembered here, else the ledger's), so a second use
    of the same key with another body, concurrent or after a restart, is refused before either runs."""

    def __init__(self, max_keys: int = MAX_TRIES) -> None:
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_keys

    def claim(self, prefix: str, key: str, stored: Callable[[], str | None]) -> str:
        """The job key this Idempotency-Key prefix is bound to. One not held here is bound to `stored()` (the
        ledger's, from before a restart or an eviction) or else to `key`; so a refused request never rebinds it."""
        with self._lock:
            bound = self._keys.get(prefix)
            if bound is not None:
                self._keys.move_to_end(prefix)
                return bound
        found = stored() or key  # outside the lock: a ledger read; a concurrent claim is settled by setdefault
        with self._lock:
            bound = self._keys.setdefault(prefix, found)
            self._keys.move_to_end(prefix)
            while len(self._keys) > self._max:
                self._keys.popitem(last=False)
            return bound
