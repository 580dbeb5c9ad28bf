"""Router: pick a backend for each job under a policy, and say why.

Order of steps (each adds human-readable reasons to the Decision):
capability filter -> rules' `require:` -> pin or rules (use / prefer / avoid) -> volume shift -> objective ->
budget of the choice.

- A backend that cannot run the job (mask, image count, size, n, format, transparency...) is never chosen,
  not even when pinned or named by a rule; fallbacks are filtered the same way.
- Nor is one that misses a matching rule's `require:` (e.g. `training_data: commercially_cleared`): every
  matching rule's requirement holds, whatever its place in the list, for pins, shifts, overflows and fallbacks.
- `use:` (first matching rule) and an active volume shift force a backend; `prefer:`/`avoid:` rank backends
  (the first matching rule that names a backend decides its rank) and the objective picks within the best rank.
- A budget that this job's estimate would overrun either holds the job (`stop`: not routed) or sends it to
  its `overflow_to` backend (whose own budget then applies).
Deterministic for the same policy, job and spend state: ties break on declaration order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from backends.base import Capabilities, CostEstimate, EditRequest
from backends.errors import EditError
from backends.validation import capability_problems, skipped_checks
from pipeline.deadlines import deadline_problem
from pipeline.errors import ConfigError
from pipeline.jobs import Job
from pipeline.routing.policy import BackendSpec, Budget, Objective, Policy, VolumeShift
from pipeline.routing.quality_file import quality_note
from pipeline.routing.rules import REQUIRABLE
from pipeline.routing.spend_source import SpendSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alternative:
    backend: str
    estimate: CostEstimate | None
    quality: float | None  # the policy's score for this backend at the job's tier
    excluded: str | None  # why it was not chosen as primary (None: eligible but ranked lower)


@dataclass(frozen=True)
class Decision:
    job_id: str
    backend: str | None  # None: no backend may run this job; `reasons` say why
    estimate: CostEstimate | None
    alternatives: tuple[Alternative, ...]
    fallbacks: tuple[str, ...]  # in order, tried on BackendUnavailable
    reasons: tuple[str, ...]
    quality: float | None = None  # the chosen backend's score at the job's tier

    @property
    def routable(self) -> bool:
        return self.backend is not None


def usd(amount: Decimal) -> str:
    return f"${amount:,.4f}"


@dataclass(slots=True)  # not frozen: built for every capable backend of every job, so keep it cheap
class Candidate:
    name: str
    estimate: CostEstimate
    quality: float
    order: int
    per_image: Decimal


def meets(objective: Objective, c: Candidate) -> str | None:
    """Why `c` misses the objective's bar, or None."""
    if c.quality < objective.min_quality:
        return f"quality {c.quality:g} is below min_quality {objective.min_quality:g}"
    if objective.max_cost_per_image is not None and c.per_image > objective.max_cost_per_image:
        return f"{usd(c.per_image)}/image is over max_cost_per_image {usd(objective.max_cost_per_image)}"
    return None


def objective_order(objective: Objective, cands: Sequence[Candidate]) -> list[Candidate]:
    """Best first: cheapest per image (then quality), or best quality (then price); ties by declaration order."""
    if objective.type == "cheapest":
        return sorted(cands, key=lambda c: (c.per_image, -c.quality, c.order))
    return sorted(cands, key=lambda c: (-c.quality, c.per_image, c.order))


def backend_traits(caps: Capabilities, spec: BackendSpec) -> dict[str, str]:
    """What a `require:` block is checked against: the backend's declared capabilities, with the policy's own
    `training_data:` for it (if given) winning."""
    traits = {key: str(getattr(caps, key)) for key in REQUIRABLE}
    if spec.training_data is not None:
        traits["training_data"] = spec.training_data
    return traits


def mapping_notes(caps: Capabilities, request: EditRequest) -> list[str]:
    """How a backend honours this request's OpenAI semantics where it has no direct equivalent (empty: natively)."""
    notes = []
    if request.mask is not None and caps.mask_mode == "paste_back":
        notes.append("mask by paste-back (it edits the whole picture; pixels outside the mask are kept exactly)")
    if request.n > 1 and caps.n_mode == "parallel_calls":
        notes.append(f"n={request.n} as {request.n} parallel calls, each billed")
    if caps.size_mode == "resized":
        target = "the input's own size" if request.size == "auto" else request.size
        notes.append(f"made at the provider's nearest size, resized to {target}")
    return notes


def assess(backend: Any, caps: Capabilities, request: EditRequest) -> tuple[CostEstimate | None, str]:
    """The backend's estimate for `request`, or (None, why it cannot take it): capabilities first, then estimate()."""
    problems = capability_problems(request, caps)
    if problems:
        return None, "cannot run this job: " + "; ".join(p.message for p in problems)
    try:
        return backend.estimate(request), ""
    except EditError as exc:
        return None, f"cannot estimate this job: {exc.message}"


class Router:
    def __init__(self, policy: Policy, backends: Mapping[str, object], spend: SpendSource) -> None:
        missing = [n for n in policy.backends if n not in backends]
        if missing:
            raise ConfigError(f"router: no backend object for {', '.join(missing)} (build them with build_backends)")
        self.policy = policy
        self.backends = backends
        self.spend = spend
        self._names = list(policy.backends)
        self._order = {n: i for i, n in enumerate(self._names)}
        self._caps = {n: backends[n].capabilities for n in self._names}  # type: ignore[attr-defined]
        self._budgets: dict[str, list[Budget]] = {}
        for b in policy.budgets:
            self._budgets.setdefault(b.backend, []).append(b)
        self._objective_text = policy.objective.describe()
        # plain tuples: pydantic private-attribute access is slow in a 100,000-job loop
        self._rule_preds = [
            (rule, rule.when.predicates(), f"{rule.label(i)} ({rule.when.describe()})")
            for i, rule in enumerate(policy.rules)
            if rule.action
        ]
        self._require_preds = [
            (rule.require, rule.when.predicates(), f"{rule.label(i)} ({rule.when.describe()})")
            for i, rule in enumerate(policy.rules)
            if rule.require is not None
        ]
        self._traits = {n: backend_traits(self._caps[n], policy.backends[n]) for n in self._names}
        self._shift_preds = [(shift, shift.when.predicates()) for shift in policy.volume_shift]
        self._quality_notes = policy.quality_notes
        self._infer_masks = tuple(n for n, spec in policy.backends.items() if spec.settings.get("mask_inference"))

    # ---- steps ----------------------------------------------------------------------------------------

    def _capable(
        self, job: Job, reasons: list[str], at: datetime | None = None
    ) -> tuple[dict[str, Candidate], dict[str, str]]:
        req = job.request
        cands: dict[str, Candidate] = {}
        excluded: dict[str, str] = {}
        for name in self._names:
            turnaround = getattr(
                self._caps[name], "turnaround_s", None
            )  # a batch lane: only for jobs that can wait that long
            late = deadline_problem(job.deadline, turnaround, at) if turnaround is not None else None
            if late:
                excluded[name] = f"cannot run this job: {late}"
                continue
            est, why = assess(self.backends[name], self._caps[name], req)
            if est is None:
                excluded[name] = why
                continue
            q = self.policy.quality[name].for_tier(req.quality)
            cands[name] = Candidate(name, est, q, self._order[name], est.usd if req.n == 1 else est.usd / max(req.n, 1))
        for name, why in excluded.items():
            reasons.append(f"capability: {name} {why}")
        if cands:
            reasons.append("capable: " + ", ".join(cands))
            if self._quality_notes:  # a quality file is in play: say which scores are measured, which declared
                notes = "; ".join(
                    f"{c.name} {quality_note(self._quality_notes, c.name, req.quality, c.quality)}"
                    for c in cands.values()
                )
                reasons.append(f"quality at {req.quality}: {notes}")
        reasons.extend(skipped_checks(req))  # remote refs: the pixel checks the provider makes instead
        if req.mask is None and self._infer_masks:
            inferring = [n for n in self._infer_masks if n in cands]
            if inferring:
                reasons.append(f"no mask: {', '.join(inferring)} would infer one from the prompt (mask_inference)")
        return cands, excluded

    def _required(self, job: Job, cands: dict[str, Candidate], excluded: dict[str, str], reasons: list[str]) -> bool:
        """Drop from `cands` every backend that misses a matching rule's `require:`; False if none is left."""
        for require, preds, head in self._require_preds:
            if not all(p(job) for p in preds):
                continue
            missing = {n: why for n in cands if (why := require.misses(self._traits[n])) is not None}
            if not missing:
                reasons.append(f"{head}: require {require.describe()}: {', '.join(cands) or 'none'} qualify")
                continue
            for name, why in missing.items():
                excluded[name] = f"lacks {require.describe()}, required by {head.partition(' (')[0]} (it has {why})"
                del cands[name]
            left = list(cands)
            verdict = (
                f"only {left[0]} qualifies"
                if len(left) == 1
                else f"{', '.join(left)} qualify"
                if left
                else "no capable backend qualifies: job held"
            )
            not_ = ", ".join(f"{n}: {why}" for n, why in missing.items())
            reasons.append(f"{head}: require {require.describe()}: {verdict} (not {not_})")
            if not left:
                return False
        return True

    def _rules(
        self, job: Job, cands: Mapping[str, Candidate], excluded: Mapping[str, str], reasons: list[str]
    ) -> tuple[str | None, dict[str, int]]:
        rank: dict[str, int] = {}
        for rule, preds, head in self._rule_preds:
            if not all(p(job) for p in preds):
                continue
            if rule.use:
                if rule.use not in cands:
                    why = excluded.get(rule.use, "is not available")
                    reasons.append(f"{head}: use {rule.use} skipped, {rule.use} {why}")
                    continue
                reasons.append(f"{head}: use {rule.use}")
                return rule.use, rank
            for name in rule.prefer:
                rank.setdefault(name, 0)
            for name in rule.avoid:
                rank.setdefault(name, 2)
            reasons.append(f"{head}: {rule.action}")
        return None, rank

    def _shift_level(self, shift: VolumeShift, at: datetime | None) -> tuple[bool, str]:
        counting = shift.counting or tuple(n for n in self._names if n != shift.to)
        who = ", ".join(counting)
        if shift.after_jobs is not None:
            done = sum(self.spend.job_count(n, shift.period, at) for n in counting)
            return done >= shift.after_jobs, f"{done} jobs on {who} this {shift.period} (threshold {shift.after_jobs})"
        spent = sum((self.spend.spent(n, shift.period, at) for n in counting), Decimal(0))
        assert shift.after_usd is not None
        return (
            spent >= shift.after_usd,
            f"{usd(spent)} spent on {who} this {shift.period} (threshold {usd(shift.after_usd)})",
        )

    def _volume_shift(
        self, job: Job, cands: Mapping[str, Candidate], at: datetime | None, reasons: list[str]
    ) -> str | None:
        for shift, preds in self._shift_preds:
            if not all(p(job) for p in preds):
                continue
            if shift.to not in cands:
                continue  # the capability reasons already say why `to` cannot take it
            active, level = self._shift_level(shift, at)
            label = f"volume shift{f' {shift.name!r}' if shift.name else ''}"
            if not active:
                reasons.append(f"{label}: not yet, {level}")
                continue
            reasons.append(f"{label}: {level} reached, eligible work goes to {shift.to}")
            return shift.to
        return None

    def _objective(
        self, cands: Mapping[str, Candidate], rank: Mapping[str, int], excluded: dict[str, str], reasons: list[str]
    ) -> str | None:
        obj = self.policy.objective
        pool = []
        for c in cands.values():
            why = meets(obj, c)
            if why is None:
                pool.append(c)
            else:
                excluded[c.name] = why
        if not pool:
            if obj.when_unmet == "refuse":
                reasons.append(f"objective {self._objective_text}: no capable backend meets it (when_unmet: refuse)")
                return None
            reasons.append(f"objective {self._objective_text}: no capable backend meets it; relaxed to all capable")
            pool = list(cands.values())
            for c in pool:
                excluded.pop(c.name, None)
        best_rank = min(rank.get(c.name, 1) for c in pool)
        if best_rank != 1 or any(rank.get(c.name, 1) != best_rank for c in pool):
            for c in pool:
                r = rank.get(c.name, 1)
                if r != best_rank:
                    excluded[c.name] = "avoided by a rule" if r == 2 else "ranked below a preferred backend"
            pool = [c for c in pool if rank.get(c.name, 1) == best_rank]
        ranked = objective_order(obj, pool)
        summary = ", ".join(f"{c.name} {usd(c.per_image)}/image q={c.quality:g}" for c in ranked[:4])
        dropped = [f"{n} ({why})" for n, why in excluded.items() if n in cands and cands[n] not in pool]
        if dropped:
            summary += "; not considered: " + ", ".join(dropped)
        reasons.append(f"objective {self._objective_text}: {summary}")
        return ranked[0].name

    def _budget(
        self,
        name: str,
        cands: Mapping[str, Candidate],
        excluded: dict[str, str],
        at: datetime | None,
        reasons: list[str],
        *,
        overflow: bool = True,
    ) -> str | None:
        seen: set[str] = set()
        while name not in seen:
            seen.add(name)
            cost = cands[name].estimate.usd
            for budget in self._budgets.get(name, ()):
                spent = self.spend.spent(name, budget.period, at)
                state = f"budget {name}/{budget.period}: {usd(spent)} spent of {usd(budget.limit_usd)}"
                if spent + cost <= budget.limit_usd:
                    reasons.append(f"{state}; this job's {usd(cost)} fits")
                    continue
                excluded[name] = f"{state}, exhausted"
                target = budget.overflow_to
                if target is None or not overflow:
                    how = "stop" if target is None else "pinned jobs do not overflow"
                    reasons.append(f"{state}; this job's {usd(cost)} would exceed it (on_exhausted: {how}): job held")
                    return None
                if target not in cands:
                    reasons.append(
                        f"{state}; overflow to {target} impossible, {target} "
                        f"{excluded.get(target, 'is not available')}: job held"
                    )
                    return None
                reasons.append(f"{state}; this job's {usd(cost)} would exceed it: overflow to {target}")
                name = target
                break
            else:
                return name
        reasons.append(f"budgets: overflow loop back to {name}: job held")
        return None

    # ---- the decision ---------------------------------------------------------------------------------

    def route(self, job: Job, at: datetime | None = None) -> Decision:
        reasons: list[str] = []
        cands, excluded = self._capable(job, reasons, at)
        chosen = self._choose(job, cands, excluded, at, reasons)
        return self._decision(job, chosen, cands, excluded, reasons)

    def choose(self, job: Job, cands: Mapping[str, Candidate], at: datetime | None = None) -> str | None:
        """The choice among already-estimated capable `cands` (no new estimates): for what-if comparisons."""
        mine = {n: c for n, c in cands.items() if n in self._order}
        return self._choose(job, mine, {}, at, [])

    def _choose(
        self, job: Job, cands: dict[str, Candidate], excluded: dict[str, str], at: datetime | None, reasons: list[str]
    ) -> str | None:
        if self._require_preds and not self._required(job, cands, excluded, reasons):
            return None
        if job.backend is not None:
            pin = job.backend
            if pin not in self._order:
                reasons.append(f"pinned to {pin!r}, which this policy does not declare ({', '.join(self._names)})")
                return None
            if pin not in cands:
                reasons.append(f"pinned to {pin}, but {pin} {excluded.get(pin, 'is not available')}")
                return None
            reasons.append(f"pinned to {pin} by the manifest (objective and rules skipped)")
            return self._budget(pin, cands, excluded, at, reasons, overflow=False)
        if not cands:
            reasons.append("no backend in this policy can run this job")
            return None
        forced, rank = self._rules(job, cands, excluded, reasons)
        forced = forced or self._volume_shift(job, cands, at, reasons)
        choice = forced or self._objective(cands, rank, excluded, reasons)
        return None if choice is None else self._budget(choice, cands, excluded, at, reasons)

    def _decision(
        self,
        job: Job,
        chosen: str | None,
        cands: Mapping[str, Candidate],
        excluded: Mapping[str, str],
        reasons: list[str],
    ) -> Decision:
        alternatives = tuple(
            Alternative(
                n,
                cands[n].estimate if n in cands else None,
                cands[n].quality if n in cands else self.policy.quality[n].for_tier(job.request.quality),
                excluded.get(n),
            )
            for n in self._names
            if n != chosen
        )
        if chosen is None:
            return Decision(job.id, None, None, alternatives, (), tuple(reasons))
        fallbacks = []
        skipped = []
        for n in self.policy.fallbacks.get(chosen, ()):
            if n == chosen or n in fallbacks:
                continue
            (fallbacks if n in cands else skipped).append(n)
        if fallbacks or skipped:
            text = ", ".join(fallbacks) or "none"
            if skipped:
                text += f" ({', '.join(skipped)} cannot run this job)"
            reasons.append(f"fallbacks: {text}")
        notes = mapping_notes(self._caps[chosen], job.request)
        if notes:
            reasons.append(f"how {chosen} runs it: {'; '.join(notes)}")
        c = cands[chosen]
        reasons.append(f"chose {chosen}: {usd(c.estimate.usd)} ({c.estimate.basis})")  # always the last reason
        return Decision(job.id, chosen, c.estimate, alternatives, tuple(fallbacks), tuple(reasons), c.quality)
