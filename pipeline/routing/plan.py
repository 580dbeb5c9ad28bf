"""Plan a batch without running it: route every job, add up the estimates per backend, and compare with
sending the whole batch to the hosted API or to self-hosted backends.

Routing records each planned job's estimate in an `InMemorySpend`, so budgets and volume shifts bind within
the plan exactly as they would during a run. `project()` replays the manifest's mix as N jobs spread over
a month, to show where a volume shift or a monthly budget kicks in. A job that goes to a batch lane (a backend
whose results take hours: OpenAI's Batch API) is also priced as if it could not wait (the policy's choice among the
synchronous backends): its decision says what the lane saves, and `PlanSummary.lanes` adds it up.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pipeline.jobs import Job
from pipeline.routing.policy import Policy
from pipeline.routing.router import Candidate, Decision, Router, usd
from pipeline.routing.spend_source import InMemorySpend

HOSTINGS = ("api", "self-hosted")
MICRO = Decimal("0.000001")


def money(amount: Decimal) -> str:
    """USD for machine output: to the micro-dollar (estimates are not more exact than that)."""
    return str(amount.quantize(MICRO))


@dataclass
class Totals:
    jobs: int = 0
    images: int = 0  # outputs (sum of n)
    usd: Decimal = Decimal(0)

    def add(self, n: int, cost: Decimal) -> None:
        self.jobs += 1
        self.images += n
        self.usd += cost

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "images": self.images, "usd": money(self.usd)}


@dataclass
class Comparison:
    """The same jobs sent to one kind of hosting only (the objective's pick among that kind's backends)."""

    totals: Totals = field(default_factory=Totals)
    cannot_run: int = 0  # jobs no backend of this kind can run

    def as_dict(self) -> dict[str, Any]:
        return {**self.totals.as_dict(), "cannot_run": self.cannot_run}


@dataclass
class LaneSaving:
    """Jobs planned on batch lanes, and what the same jobs cost where the policy sends them when they cannot wait."""

    jobs: int = 0
    usd: Decimal = Decimal(0)
    sync_usd: Decimal = Decimal(0)  # (jobs that only a lane can run are counted at the lane's price)
    lane_only: int = 0  # jobs no synchronous backend of the policy can run

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "usd": money(self.usd),
            "synchronous_usd": money(self.sync_usd),
            "saves_usd": money(self.sync_usd - self.usd),
            "lane_only": self.lane_only,
        }


@dataclass
class PlanSummary:
    split: dict[str, Totals]  # per backend, in policy order
    held: int = 0  # jobs no backend may run (capability, pin, budget stop)
    compare: dict[str, Comparison] = field(default_factory=lambda: {h: Comparison() for h in HOSTINGS})
    decisions: list[Decision] = field(default_factory=list)
    lanes: LaneSaving = field(default_factory=LaneSaving)
    lane_savings: dict[str, tuple[str, Decimal, Decimal]] = field(default_factory=dict)  # job -> (sync, usd, saves)

    @property
    def jobs(self) -> int:
        return sum(t.jobs for t in self.split.values()) + self.held

    @property
    def total_usd(self) -> Decimal:
        return sum((t.usd for t in self.split.values()), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "routed": self.jobs - self.held,
            "held": self.held,
            "total_usd": money(self.total_usd),
            "split": {name: t.as_dict() for name, t in self.split.items()},
            "all_api": self.compare["api"].as_dict(),
            "all_self_hosted": self.compare["self-hosted"].as_dict(),
            **({"batch_lane": self.lanes.as_dict()} if self.lanes.jobs else {}),
        }


def _candidates(decision: Decision, policy: Policy, n: int) -> dict[str, Candidate]:
    order = {name: i for i, name in enumerate(policy.backends)}
    out = {}
    if decision.backend is not None and decision.estimate is not None:
        out[decision.backend] = Candidate(
            decision.backend,
            decision.estimate,
            decision.quality or 0.0,
            order[decision.backend],
            decision.estimate.usd / n,
        )
    for alt in decision.alternatives:
        if alt.estimate is not None:  # capable; budgets and the quality bar are the comparison router's job
            out[alt.backend] = Candidate(
                alt.backend, alt.estimate, alt.quality or 0.0, order[alt.backend], alt.estimate.usd / n
            )
    return dict(sorted(out.items(), key=lambda kv: kv[1].order))


def comparison_routers(policy: Policy, backends: dict[str, Any]) -> dict[str, Router]:
    """Per hosting kind, a router over only that kind's backends: same rules and objective, no budgets or
    volume shift (the question is what the batch would cost there, not whether a budget allows it)."""
    out = {}
    for hosting in HOSTINGS:
        names = {n: s for n, s in policy.backends.items() if s.hosting == hosting}
        sub = policy.model_copy(update={"backends": names, "budgets": (), "volume_shift": ()})
        out[hosting] = Router(sub, {n: backends[n] for n in names}, InMemorySpend())
    return out


def _tally(summary: PlanSummary, policy: Policy, routers: dict[str, Router], job: Job, decision: Decision) -> None:
    n = job.request.n
    if decision.backend is None or decision.estimate is None:
        summary.held += 1
    else:
        summary.split[decision.backend].add(n, decision.estimate.usd)
    cands = _candidates(decision, policy, max(n, 1))
    unpinned = replace(job, backend=None) if job.backend is not None else job
    for hosting, router in routers.items():
        choice = router.choose(unpinned, cands)
        if choice is None:
            summary.compare[hosting].cannot_run += 1
        else:
            summary.compare[hosting].totals.add(n, cands[choice].estimate.usd)


def plan_jobs(
    policy: Policy,
    backends: dict[str, Any],
    jobs: Iterable[Job],
    *,
    at: datetime | None = None,
    keep_decisions: bool = True,
    spend: InMemorySpend | None = None,
    when: Callable[[int], datetime] | None = None,
) -> PlanSummary:
    """Route `jobs` in order, recording each estimate so budgets and volume shifts bind within the plan."""
    spend = spend if spend is not None else InMemorySpend()
    router = Router(policy, backends, spend)
    routers = comparison_routers(policy, backends)
    summary = PlanSummary(split={name: Totals() for name in policy.backends})
    lanes = lane_names(policy, backends)
    at = at or datetime.now(UTC)
    for k, job in enumerate(jobs):
        t = when(k) if when is not None else at
        decision = router.route(job, at=t)
        if decision.backend in lanes and decision.estimate is not None:
            decision = _lane_saving(summary, router, policy, lanes, job, decision, t, keep_decisions)
        if decision.backend is not None and decision.estimate is not None:
            spend.record(decision.backend, decision.estimate.usd, at=t)
        _tally(summary, policy, routers, job, decision)
        if keep_decisions:
            summary.decisions.append(decision)
    return summary


def lane_names(policy: Policy, backends: dict[str, Any]) -> set[str]:
    """The policy's batch lanes: backends whose results take hours (`Capabilities.turnaround_s`)."""
    return {n for n in policy.backends if getattr(getattr(backends[n], "capabilities", None), "turnaround_s", None)}


def _lane_saving(
    summary: PlanSummary,
    router: Router,
    policy: Policy,
    lanes: set[str],
    job: Job,
    decision: Decision,
    at: datetime,
    keep: bool,
) -> Decision:
    """The lane's price beside the policy's synchronous choice for the same job (as if it could not wait)."""
    assert decision.backend is not None and decision.estimate is not None
    n = max(job.request.n, 1)
    cands = {name: c for name, c in _candidates(decision, policy, n).items() if name not in lanes}
    alt = router.choose(replace(job, backend=None, deadline=None), cands, at) if cands else None
    lane_usd = decision.estimate.usd
    summary.lanes.jobs += 1
    summary.lanes.usd += lane_usd
    if alt is None:
        summary.lanes.lane_only += 1
        summary.lanes.sync_usd += lane_usd
        line = f"batch lane {decision.backend}: no synchronous backend of this policy can run this job"
    else:
        sync_usd = cands[alt].estimate.usd
        summary.lanes.sync_usd += sync_usd
        if keep:
            summary.lane_savings[job.id] = (alt, sync_usd, sync_usd - lane_usd)
        if sync_usd >= lane_usd:
            line = (
                f"batch lane {decision.backend} saves {usd(sync_usd - lane_usd)} vs {alt}: {usd(lane_usd)} instead of "
                f"{usd(sync_usd)} (synchronous; results within its window instead of now)"
            )
        else:  # a rule sent it to the lane although a synchronous backend is cheaper still
            line = (
                f"batch lane {decision.backend} costs {usd(lane_usd - sync_usd)} more than {alt} ({usd(sync_usd)}, "
                f"synchronous), which this policy would pick if the job could not wait"
            )
    return replace(decision, reasons=(*decision.reasons, line))


def month_clock(volume: int, at: datetime | None = None) -> Callable[[int], datetime]:
    """Job k of `volume` at its evenly spread moment in the month containing `at` (daily budgets bind too)."""
    at = at or datetime.now(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    seconds = calendar.monthrange(at.year, at.month)[1] * 86400
    step = seconds / max(volume, 1)
    return lambda k: start + timedelta(seconds=(k + 0.5) * step)


def project(
    policy: Policy, backends: dict[str, Any], jobs: Callable[[], Iterable[Job]], volume: int, at: datetime | None = None
) -> PlanSummary:
    """The manifest's mix replayed as `volume` jobs over one month (cycling through the manifest)."""

    def cycle() -> Iterable[Job]:
        made = 0
        while made < volume:
            before = made
            for job in jobs():
                if made >= volume:
                    return
                yield job
                made += 1
            if made == before:  # no valid jobs at all
                return

    return plan_jobs(policy, backends, cycle(), keep_decisions=False, when=month_clock(volume, at))
