"""What the router needs to know about money already spent: per backend, per day and month (UTC).

The SQLite ledger is the real source (settled spend plus open reservations); `InMemorySpend` serves
`editroute plan`, which adds each planned job's estimate as it goes so budgets bind within one plan.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, Protocol

Period = Literal["day", "month"]


def period_key(period: Period, at: datetime | None = None) -> str:
    at = at or datetime.now(UTC)
    return at.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


class SpendSource(Protocol):
    def spent(self, backend: str | None, period: Period, at: datetime | None = None) -> Decimal:
        """USD spent (and reserved) on `backend` (None: all backends) in the period containing `at`."""
        ...

    def job_count(self, backend: str | None, period: Period, at: datetime | None = None) -> int:
        """Jobs run (or reserved) on `backend` (None: all) in the period containing `at`."""
        ...


class InMemorySpend:
    def __init__(self) -> None:
        self._usd: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self._jobs: dict[tuple[str, str], int] = defaultdict(int)

    def record(self, backend: str, usd: Decimal, at: datetime | None = None, jobs: int = 1) -> None:
        for period in ("day", "month"):
            key = (backend, period_key(period, at))  # type: ignore[arg-type]
            self._usd[key] += usd
            self._jobs[key] += jobs

    def spent(self, backend: str | None, period: Period, at: datetime | None = None) -> Decimal:
        k = period_key(period, at)
        return sum((v for (b, p), v in self._usd.items() if p == k and backend in (None, b)), Decimal(0))

    def job_count(self, backend: str | None, period: Period, at: datetime | None = None) -> int:
        k = period_key(period, at)
        return sum(v for (b, p), v in self._jobs.items() if p == k and backend in (None, b))
