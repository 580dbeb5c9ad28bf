"""A job's deadline: how long it can wait for its result, which decides whether a batch lane may take it.

A manifest entry's `deadline` is a duration (`90m`, `24h`, `36h`, `2d`: the job can wait that long from the moment
it is routed) or an ISO 8601 timestamp (`2026-12-09T18:00:00Z`; without a zone it is read as UTC). A job without a
deadline is urgent: it never goes to a backend whose results take hours (`Capabilities.turnaround_s`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_S = {"m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `90m`, `24h`, `2d` (ValueError naming what is expected)."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 90m, 24h, 36h or 2d (got {text!r})")
    return float(m.group(1)) * _UNIT_S[m.group(2).lower()]


def describe_s(seconds: float) -> str:
    """Seconds for people: 2d, 36h, 90m."""
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    return f"{max(seconds, 0) / 60:.3g}m"


@dataclass(frozen=True)
class Deadline:
    text: str  # as the manifest gave it
    seconds: float | None = None  # relative: this long from when the job is routed
    at: datetime | None = None  # absolute (UTC)

    def remaining_s(self, now: datetime | None = None) -> float:
        """Seconds the job can still wait at `now` (negative: past)."""
        if self.seconds is not None:
            return self.seconds
        assert self.at is not None
        return (self.at - (now or datetime.now(UTC))).total_seconds()

    def due(self, now: datetime | None = None) -> datetime:
        """When the result is due, for a job routed at `now`."""
        now = now or datetime.now(UTC)
        return self.at if self.at is not None else datetime.fromtimestamp(now.timestamp() + (self.seconds or 0), UTC)


def parse_deadline(value: str) -> Deadline:
    """A manifest's `deadline` value (ValueError saying what is expected)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a duration (24h, 2d) or an ISO timestamp (got {value!r})")
    if _DURATION.match(value):
        return Deadline(value.strip(), seconds=parse_duration(value))
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"expected a duration such as 90m, 24h or 2d, or an ISO timestamp such as 2026-12-09T18:00:00Z "
            f"(got {value!r})"
        ) from None
    return Deadline(value.strip(), at=at if at.tzinfo else at.replace(tzinfo=UTC))


def deadline_problem(deadline: Deadline | None, turnaround_s: float, now: datetime | None = None) -> str | None:
    """Why a job with this deadline cannot wait for a backend whose results take `turnaround_s` (None: it can)."""
    window = describe_s(turnaround_s)
    if deadline is None:
        return f"results take up to {window} and the job has no deadline (urgent; `deadline: {window}` lets it wait)"
    left = deadline.remaining_s(now)
    if left < turnaround_s:
        return f"results take up to {window}; the job's deadline {deadline.text} leaves {describe_s(left)}"
    return None
