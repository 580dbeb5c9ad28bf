"""The one error tree every backend raises, and the router and runner act on.

    EditError                      base; carries job_id and backend
     ├── InvalidRequest            the request cannot run here: never retried, never falls back
     ├── RateLimited               slow down; retry after `retry_after` seconds
     ├── BackendUnavailable        this backend cannot serve now: follow the policy's fallbacks
     │    ├── BackendMisconfigured bad key, unverified org, missing model: a person must fix config
     │    └── OutcomeUnknown       the request went out, no answer came back: it may have been billed
     ├── ContentRejected           moderation refused it: no fallback unless the policy says so
     └── BudgetExceeded            the policy's budget for this backend/period is spent

Foreign errors (httpx, torch, diffusers) are translated into these at each backend's boundary.
All are picklable (they cross process boundaries on Ray) and never hold secrets. `spent_usd` says what a
failed call was billed all the same (e.g. the calls of a multi-call edit that had succeeded), so the runner
settles it instead of recording $0; `possible_charges` counts earlier tries that went out unanswered and were
retried (as `EditResult.extras["possible_charges"]` does for a call that then succeeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


class EditError(Exception):
    """Base of all editroute errors. `str()` names the job and backend when known."""

    spent_usd: Decimal | None = None  # billed although the edit failed (None: nothing known to be billed)
    possible_charges: int = 0  # earlier tries of this call that went out, got no answer and were retried

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        backend: str | None = None,
        spent_usd: Decimal | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id
        self.backend = backend
        if spent_usd is not None:
            self.spent_usd = spent_usd

    def _extra(self) -> dict[str, Any]:
        return {}

    def __reduce__(self):  # keyword-only attributes survive pickling
        kept = ("spent_usd", "possible_charges", "upstream")  # `upstream`: the provider's own answer, passed on
        state = {k: v for k in kept if (v := getattr(self, k, None))}
        return (_rebuild, (type(self), self.message, self.job_id, self.backend, self._extra()), state or None)

    def __str__(self) -> str:
        where = []
        if self.job_id is not None:
            where.append(f"job {self.job_id!r}")
        if self.backend is not None:
            where.append(f"backend {self.backend!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def with_context(self, *, job_id: str | None = None, backend: str | None = None) -> EditError:
        """Fill in job/backend if not yet known (errors are raised deep, named higher up)."""
        if self.job_id is None:
            self.job_id = job_id
        if self.backend is None:
            self.backend = backend
        return self


def _rebuild(cls, message, job_id, backend, extra):
    return cls(message, job_id=job_id, backend=backend, **extra)


class InvalidRequest(EditError):
    """The request breaks a limit. `field`, `value` and `limit` say which, for people and for the server's
    error envelope (`param`)."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        limit: str | None = None,
        job_id: str | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, backend=backend)
        self.field = field
        self.value = value
        self.limit = limit

    def _extra(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "limit": self.limit}


class RateLimited(EditError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        job_id: str | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, backend=backend)
        self.retry_after = retry_after

    def _extra(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


class BackendUnavailable(EditError):
    pass


class BackendMisconfigured(BackendUnavailable):
    pass


class OutcomeUnknown(BackendUnavailable):
    """The request was sent and its answer never arrived (a connection dropped or timed out while waiting, a
    submit whose reply was lost): the provider may have done, and billed, the work. The runner keeps the call's
    budget hold as a possible charge instead of settling it at $0; resending may pay a second time."""


class ContentRejected(EditError):
    pass


class BudgetExceeded(EditError):
    pass


@dataclass(frozen=True)
class UpstreamError:
    """A hosted provider's own error answer, kept whole beside the `EditError` it became (`upstream_of(err)`),
    so a server in front of that provider can pass it on as the provider sent it: the status, the JSON body (its
    `error` object's message scrubbed of key-shaped strings; `moderation_details` and the like kept), OpenAI's four
    envelope fields read from it, and the headers a client acts on (retry-after, retry-after-ms, x-ratelimit-*)."""

    status: int
    message: str
    type: str | None = None
    param: str | None = None
    code: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def upstream_of(err: BaseException | None) -> UpstreamError | None:
    """The provider's answer behind `err`, when a hosted backend attached one (`err.upstream`)."""
    found = getattr(err, "upstream", None)
    return found if isinstance(found, UpstreamError) else None
