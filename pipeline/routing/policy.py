"""The routing policy: a YAML file validated by pydantic (extra keys forbidden).

    backends:      name -> {kind: openai|sdxl|gemini|firefly, hosting?: api|self-hosted,
                   training_data?: commercially_cleared|undisclosed (overrides the kind's own), ...its settings}
    quality:       name -> score (0..1) or {low, medium, high[, auto]}; `quality_file:` (measured) overrides,
                   acceptance rates only past `quality_min_samples`, stand-in scores only with
                   `allow_stand_in_quality: true` (quality_file.py)
    rules:         ordered; `when:` conditions -> one of use / prefer / avoid, and/or `require:` capabilities
                   (e.g. {training_data: commercially_cleared}) every backend that takes the job must declare
    objective:     cheapest (meeting min_quality) | best_quality (under max_cost_per_image)
    budgets:       per backend and period (day | month): limit_usd, on_exhausted: stop | {overflow_to: name}
    unknown_outcome_hold: how long a call of unknown outcome holds budget: until_period_end (default) | 24h ...
    volume_shift:  past N jobs or $X this period on some backends, eligible work goes to `to`
    fallbacks:     name -> [names], tried in order when the chosen backend is unavailable
    fallback_on_rejected: also try them when a backend's content filter refuses the job (default false)

`load_policy(path)` raises `ConfigError` naming the file, line, key path, value and what was expected.
`build_backends(policy)` makes the backend objects (cheap: no model load, no network).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backends.base import TRAINING_DATA
from backends.errors import EditError
from backends.registry import UnknownBackendKind, backend_class, create_backend
from pipeline.configfile import (
    YamlDoc,
    load_yaml,
    problem_line,
    raise_problems,
    validation_messages,
)
from pipeline.errors import ConfigError
from pipeline.routing.quality_file import DEFAULT_MIN_SAMPLES, TIERS, merge_quality_file
from pipeline.routing.ray_section import RaySettings
from pipeline.routing.rules import Require, When

Hosting = Literal["api", "self-hosted"]
KIND_HOSTING: dict[str, Hosting] = {
    "openai": "api",
    "openai-batch": "api",
    "sdxl": "self-hosted",
    "qwen-edit": "self-hosted",
    "flux2-klein": "self-hosted",
    "function": "api",
    "gemini": "api",
    "firefly": "api",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
UNTIL_PERIOD_END = "until_period_end"
_HOLD = re.compile(r"^(\d+(?:\.\d+)?)(m|h|d)$")
_HOLD_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSpec(_Strict):
    """One backend entry: `kind`, optional `hosting` and `training_data`, and the rest is that kind's settings."""

    kind: str
    hosting: Hosting
    # What the policy's author vouches for about the model's training data, overriding what the kind declares
    # (`Capabilities.training_data`): e.g. an OpenAI-compatible gateway to a model trained on licensed data.
    training_data: Literal[TRAINING_DATA] | None = None  # type: ignore[valid-type]
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        own = ("kind", "hosting", "training_data")
        if "settings" in data and set(data) <= {*own, "settings"}:
            rest = dict(data["settings"] or {})
        else:
            rest = {k: v for k, v in data.items() if k not in own}
        kind = data.get("kind")
        hosting = data.get("hosting") or KIND_HOSTING.get(kind if isinstance(kind, str) else "", "api")
        return {"kind": kind, "hosting": hosting, "training_data": data.get("training_data"), "settings": rest}


class QualityScores(_Strict):
    low: float = Field(ge=0, le=1)
    medium: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    auto: float | None = Field(default=None, ge=0, le=1)  # default: the `high` score (auto usually runs high)
    xhigh: float | None = Field(default=None, ge=0, le=1)  # OpenAI's xhigh/max tiers; default: the `high` score
    max: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _single_number(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {t: data for t in TIERS}
        return data

    def for_tier(self, quality: str) -> float:
        if quality in ("auto", "xhigh", "max"):
            score = getattr(self, quality)
            return self.high if score is None else score
        return getattr(self, quality)


class Rule(_Strict):
    name: str | None = None
    when: When = Field(default_factory=When)
    use: str | None = None
    prefer: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    require: Require | None = None  # a constraint, applied to every matching job before any action of any rule

    @field_validator("prefer", "avoid", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        given = [k for k in ("use", "prefer", "avoid") if getattr(self, k)]
        if len(given) > 1 or (not given and self.require is None):
            raise ValueError(
                "one action of use / prefer / avoid per rule (a rule may also, or only, require:)"
                + (f", not {' and '.join(given)}" if given else "")
            )
        return self

    @property
    def action(self) -> str:
        """The rule's use / prefer / avoid ("" for a rule that only requires)."""
        if self.use:
            return f"use {self.use}"
        if self.prefer:
            return "prefer " + ", ".join(self.prefer)
        if self.avoid:
            return "avoid " + ", ".join(self.avoid)
        return ""

    def label(self, index: int) -> str:
        return f"rule {self.name!r}" if self.name else f"rule #{index + 1}"


class Objective(_Strict):
    type: Literal["cheapest", "best_quality"] = "cheapest"
    min_quality: float = Field(default=0.0, ge=0, le=1)  # backends scoring below this at the job's tier drop out
    max_cost_per_image: Decimal | None = Field(default=None, ge=0)  # USD; backends estimating above drop out
    when_unmet: Literal["relax", "refuse"] = "relax"  # no backend meets the bar: take the best of the rest, or none

    def describe(self) -> str:
        bars = []
        if self.min_quality:
            bars.append(f"min_quality {self.min_quality:g}")
        if self.max_cost_per_image is not None:
            bars.append(f"max ${self.max_cost_per_image}/image")
        return self.type + (f" ({', '.join(bars)})" if bars else "")


class OverflowTo(_Strict):
    overflow_to: str


class Budget(_Strict):
    backend: str
    period: Literal["day", "month"] = "month"
    limit_usd: Decimal = Field(ge=0)
    on_exhausted: Literal["stop"] | OverflowTo = "stop"

    @field_validator("on_exhausted", mode="before")
    @classmethod
    def _stop_or_overflow(cls, v: Any) -> Any:
        # one clear message instead of pydantic's one per union branch
        if v == "stop" or (isinstance(v, dict) and set(v) == {"overflow_to"} and isinstance(v["overflow_to"], str)):
            return v
        raise ValueError("stop, or {overflow_to: <backend>}")

    @property
    def overflow_to(self) -> str | None:
        return self.on_exhausted.overflow_to if isinstance(self.on_exhausted, OverflowTo) else None


class VolumeShift(_Strict):
    """Once `counting` backends have run `after_jobs` jobs or spent `after_usd` this period, eligible jobs
    (matching `when`, and runnable on `to`) go to `to`."""

    name: str | None = None
    after_jobs: int | None = Field(default=None, ge=0)
    after_usd: Decimal | None = Field(default=None, ge=0)
    period: Literal["day", "month"] = "month"
    counting: tuple[str, ...] = ()  # default: every backend except `to`
    to: str
    when: When = Field(default_factory=When)

    @field_validator("counting", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_threshold(self) -> VolumeShift:
        if (self.after_jobs is None) == (self.after_usd is None):
            raise ValueError("give exactly one of after_jobs or after_usd")
        return self


class Policy(_Strict):
    description: str = ""
    backends: dict[str, BackendSpec] = Field(min_length=1)
    quality: dict[str, QualityScores] = Field(default_factory=dict)
    quality_file: str | None = None  # path relative to the policy file; its `quality:` block wins (quality_file.py)
    quality_min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=1)  # judged outputs before a measured rate counts
    allow_stand_in_quality: bool = False  # route on scores measured on stand-ins (demos and tests only)
    quality_notes: dict[str, dict[str, str]] = Field(default_factory=dict)  # set by the loader: where scores came from
    rules: tuple[Rule, ...] = ()
    objective: Objective = Field(default_factory=Objective)
    budgets: tuple[Budget, ...] = ()
    volume_shift: tuple[VolumeShift, ...] = ()
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # A job a backend's content filter refused (ContentRejected) fails at once unless this is set: then it tries
    # the fallbacks too (providers' filters differ: a Gemini IMAGE_SAFETY block may pass elsewhere).
    fallback_on_rejected: bool = False
    # A call of unknown outcome (in flight when its run was killed, or sent and never answered) may have been
    # billed: its hold counts against budgets as a possible charge until resolved, or for this long:
    # until_period_end (the day and month it was made in), or a duration (90m, 24h, 7d). docs/crash-safety.md
    unknown_outcome_hold: str = UNTIL_PERIOD_END
    ray: RaySettings | None = None  # where self-hosted work runs with `--executor ray` (pipeline.routing.ray_section)
    source: str | None = None  # the file it came from (set by the loader)

    @field_validator("volume_shift", mode="before")
    @classmethod
    def _single_shift(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _single_fallback(cls, v: Any) -> Any:
        return {k: ([x] if isinstance(x, str) else x) for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("unknown_outcome_hold")
    @classmethod
    def _hold(cls, v: str) -> str:
        if v == UNTIL_PERIOD_END or _HOLD.match(v):
            return v
        raise ValueError(f"{UNTIL_PERIOD_END}, or a duration such as 90m, 24h or 7d")

    @property
    def unknown_outcome_hold_s(self) -> float | None:
        """Seconds a possible charge holds budget; None: until its day and month end."""
        m = _HOLD.match(self.unknown_outcome_hold)
        return None if m is None else float(m.group(1)) * _HOLD_UNIT_S[m.group(2)]

    def score(self, backend: str, quality: str) -> float:
        return self.quality[backend].for_tier(quality)

    def hosting(self, backend: str) -> Hosting:
        return self.backends[backend].hosting


_KNOWN_KEYS = {
    "(top level)": Policy.model_fields.keys(),
    "objective": Objective.model_fields.keys(),
    "ray": RaySettings.model_fields.keys(),
}


def _known_keys(data: Any) -> dict[str, Any]:
    keys: dict[str, Any] = dict(_KNOWN_KEYS)
    if isinstance(data, dict):
        for i, _ in enumerate(data.get("rules") or []):
            keys[f"rules[{i}]"] = Rule.model_fields.keys()
            keys[f"rules[{i}].when"] = When.model_fields.keys()
            keys[f"rules[{i}].require"] = Require.model_fields.keys()
        for i, _ in enumerate(data.get("budgets") or []):
            keys[f"budgets[{i}]"] = Budget.model_fields.keys()
        shifts = data.get("volume_shift")
        for i, _ in enumerate(shifts if isinstance(shifts, list) else [shifts] if shifts else []):
            keys[f"volume_shift[{i}]"] = VolumeShift.model_fields.keys()
            keys[f"volume_shift[{i}].when"] = When.model_fields.keys()
    return keys


def _check_settings(policy: Policy, doc: YamlDoc) -> list[str]:
    """Each backend's settings against its kind's `Settings` model (errors carry backends.<name>.<key>)."""
    out = []
    for name, spec in policy.backends.items():
        if not _NAME.match(name):
            out.append(
                problem_line(
                    doc,
                    doc.path,
                    ["backends", name],
                    "expected: a backend name of letters, digits, '.', '_' or '-'",
                    name,
                )
            )
        try:
            cls = backend_class(spec.kind)
        except UnknownBackendKind as exc:
            out.append(problem_line(doc, doc.path, ["backends", name, "kind"], str(exc)))
            continue
        except EditError as exc:
            out.append(problem_line(doc, doc.path, ["backends", name, "kind"], exc.message))
            continue
        settings_model = getattr(cls, "Settings", None)
        if settings_model is None:
            continue
        try:
            settings_model.model_validate(spec.settings)
        except ValidationError as exc:
            known = {f"backends.{name}": [*settings_model.model_fields, "kind", "hosting", "training_data"]}
            for field, info in settings_model.model_fields.items():  # one level down: mask_inference, lora...
                for sub in (info.annotation, *get_args(info.annotation)):
                    if isinstance(sub, type) and issubclass(sub, BaseModel):
                        known[f"backends.{name}.{field}"] = list(sub.model_fields)
            out += validation_messages(exc, doc, doc.path, prefix=["backends", name], known_keys=known)
    return out


def _check_names(policy: Policy, doc: YamlDoc) -> list[str]:
    """Every backend a rule, budget, shift, score or fallback names must be declared."""
    names = list(policy.backends)
    out = []

    def check(loc: list[str | int], name: str) -> None:
        if name not in policy.backends:
            out.append(problem_line(doc, doc.path, loc, f"expected: one of the backends ({', '.join(names)})", name))

    for name in policy.quality:
        check(["quality", name], name)
    for i, rule in enumerate(policy.rules):
        if rule.use:
            check(["rules", i, "use"], rule.use)
        for key in ("prefer", "avoid"):
            for j, name in enumerate(getattr(rule, key)):
                check(["rules", i, key, j], name)
    for i, budget in enumerate(policy.budgets):
        check(["budgets", i, "backend"], budget.backend)
        if budget.overflow_to is not None:
            check(["budgets", i, "on_exhausted", "overflow_to"], budget.overflow_to)
            if budget.overflow_to == budget.backend:
                out.append(
                    problem_line(
                        doc,
                        doc.path,
                        ["budgets", i, "on_exhausted", "overflow_to"],
                        "expected: a backend other than the budget's own",
                        budget.overflow_to,
                    )
                )
    for i, shift in enumerate(policy.volume_shift):
        check(["volume_shift", i, "to"], shift.to)
        for j, name in enumerate(shift.counting):
            check(["volume_shift", i, "counting", j], name)
    for name, chain in policy.fallbacks.items():
        check(["fallbacks", name], name)
        for j, other in enumerate(chain):
            check(["fallbacks", name, j], other)
    return out


def load_policy(path: str | Path) -> Policy:
    """Load and check a policy file; every problem is reported at once in one `ConfigError`."""
    doc = load_yaml(path, "policy file")
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{doc.path}: expected a YAML mapping with `backends:` at the top (got {type(doc.data).__name__})"
        )
    data = dict(doc.data)
    raise_problems(merge_quality_file(data, doc), "policy")
    data["source"] = str(doc.path)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise_problems(validation_messages(exc, doc, doc.path, known_keys=_known_keys(data)), "policy")
        raise AssertionError("unreachable") from None
    problems = _check_settings(policy, doc) + _check_names(policy, doc)
    for name in policy.backends:
        if name not in policy.quality:
            problems.append(
                problem_line(
                    doc,
                    doc.path,
                    ["quality"],
                    f"expected: a score for backend {name!r} (a number 0..1, or {{low, medium, high}})",
                )
            )
    raise_problems(problems, "policy")
    return policy


def build_backends(policy: Policy) -> dict[str, Any]:
    """The policy's backends as objects, in declaration order (constructing one loads no model)."""
    out = {}
    for name, spec in policy.backends.items():
        try:
            out[name] = create_backend(spec.kind, name, dict(spec.settings))
        except (ValueError, TypeError, EditError) as exc:
            raise ConfigError(f"{policy.source or 'policy'}: backends.{name}: cannot build: {exc}") from exc
    return out


__all__ = [
    "Budget",
    "BackendSpec",
    "Objective",
    "Policy",
    "QualityScores",
    "Rule",
    "VolumeShift",
    "build_backends",
    "load_policy",
]
