"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand: a few counters and
one histogram do not need a client library or its process-global registry.

    editroute_http_requests_total{route, code}         HTTP requests answered
    editroute_jobs_total{backend, status}              edit jobs by outcome (done, reused, failed)
    editroute_job_failures_total{backend, error_class} failed jobs by cause
    editroute_spend_usd_total{backend}                 USD billed by jobs this server ran (reused results: 0)
    editroute_job_latency_seconds{backend}             histogram of job wall time
    editroute_inflight_jobs                            jobs running now
    editroute_ledger_spend_usd{backend}                all-time spend in the ledger (batch runs included)
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _num(value: float | int | Decimal) -> str:
    return (
        format(value, "f")
        if isinstance(value, Decimal)
        else repr(float(value))
        if isinstance(value, float)
        else str(value)
    )


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.jobs: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.failures: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.spend: dict[tuple[tuple[str, str], ...], Decimal] = defaultdict(Decimal)
        self.latency: dict[str, list[float]] = {}  # backend -> [bucket counts..., sum, count]
        self.inflight = 0

    def request(self, route: str, code: int) -> None:
        with self._lock:
            self.requests[(("route", route), ("code", str(code)))] += 1

    def job(
        self,
        backend: str | None,
        status: str,
        *,
        seconds: float,
        cost: Decimal = Decimal(0),
        error_class: str | None = None,
    ) -> None:
        b = backend or "none"
        with self._lock:
            self.jobs[(("backend", b), ("status", status))] += 1
            if error_class:
                self.failures[(("backend", b), ("error_class", error_class))] += 1
            if cost:
                self.spend[(("backend", b),)] += cost
            row = self.latency.setdefault(b, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def started(self) -> None:
        with self._lock:
            self.inflight += 1

    def finished(self) -> None:
        with self._lock:
            self.inflight -= 1

    def render(self, ledger_spend: Mapping[str, Decimal] | None = None) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, samples) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_num(value)}")

        with self._lock:
            family(
                "editroute_http_requests_total",
                "counter",
                "HTTP requests answered, by route and status code.",
                sorted(self.requests.items()),
            )
            family(
                "editroute_jobs_total",
                "counter",
                "Edit jobs by backend and outcome (done, reused, failed).",
                sorted(self.jobs.items()),
            )
            family(
                "editroute_job_failures_total",
                "counter",
                "Failed edit jobs by backend and error class.",
                sorted(self.failures.items()),
            )
            family(
                "editroute_spend_usd_total",
                "counter",
                "USD billed by jobs this server ran.",
                sorted(self.spend.items()),
            )
            lines.append("# HELP editroute_job_latency_seconds Edit job wall time, by backend.")
            lines.append("# TYPE editroute_job_latency_seconds histogram")
            for backend, row in sorted(self.latency.items()):
                for i, bound in enumerate(BUCKETS):
                    lines.append(
                        f"editroute_job_latency_seconds_bucket"
                        f"{_labels((('backend', backend), ('le', repr(bound))))} {int(row[i])}"
                    )
                lines.append(
                    f"editroute_job_latency_seconds_bucket{_labels((('backend', backend), ('le', '+Inf')))} "
                    f"{int(row[-1])}"
                )
                lines.append(f"editroute_job_latency_seconds_sum{_labels((('backend', backend),))} {row[-2]!r}")
                lines.append(f"editroute_job_latency_seconds_count{_labels((('backend', backend),))} {int(row[-1])}")
            family("editroute_inflight_jobs", "gauge", "Edit jobs running now.", [((), self.inflight)])
        if ledger_spend is not None:
            family(
                "editroute_ledger_spend_usd",
                "gauge",
                "All-time spend recorded in the ledger (batch runs included), by backend.",
                [((("backend", b),), usd) for b, usd in sorted(ledger_spend.items())],
            )
        return "\n".join(lines) + "\n"
