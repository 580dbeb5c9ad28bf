"""Routing: which backend runs each job, and why. Owns the YAML policy (schema, loading with line-exact
errors, its `ray:` section), the `when:` rules, the `Router`, `editroute plan`'s dry-run totals, and the
`SpendSource` the router asks about money already spent (the ledger is the real one; `InMemorySpend` plans).

Below it: `pipeline.jobs`, `pipeline.configfile`, `pipeline.errors` and `backends`. No torch, FastAPI or Ray."""

from pipeline.routing.plan import PlanSummary, lane_names, money, plan_jobs, project
from pipeline.routing.policy import (
    TIERS,
    BackendSpec,
    Budget,
    Objective,
    Policy,
    QualityScores,
    Rule,
    VolumeShift,
    build_backends,
    load_policy,
)
from pipeline.routing.ray_section import RaySettings, parse_ray_settings
from pipeline.routing.router import Candidate, Decision, Router, assess, backend_traits
from pipeline.routing.rules import Require, When
from pipeline.routing.spend_source import InMemorySpend, Period, SpendSource, period_key

__all__ = [
    "TIERS",
    "BackendSpec",
    "Budget",
    "Candidate",
    "Decision",
    "InMemorySpend",
    "Objective",
    "Period",
    "PlanSummary",
    "Policy",
    "QualityScores",
    "RaySettings",
    "Require",
    "Router",
    "Rule",
    "SpendSource",
    "VolumeShift",
    "When",
    "assess",
    "backend_traits",
    "build_backends",
    "lane_names",
    "load_policy",
    "money",
    "parse_ray_settings",
    "period_key",
    "plan_jobs",
    "project",
]
