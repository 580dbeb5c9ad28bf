"""Router: pick a backend for each job under a policy, and say why.

Order of steps (each adds human-readable reasons to the Decision):
capability filter -> rules (use / prefer / avoid) -> budgets and volume shift -> objective.
Deterministic for the same policy, job and spend state.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import CostEstimate


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

    @property
    def routable(self) -> bool:
        return self.backend is not None


class Router:  # implemented in issue 4
    def __init__(self, policy, backends, spend) -> None:
        raise NotImplementedError

    def route(self, job) -> Decision:
        raise NotImplementedError
