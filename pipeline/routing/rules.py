"""The `when:` block of a policy rule (and of a volume shift): conditions on a job's fields, all of which
must hold. Compiled once at load into a tuple of small predicates, so matching 100,000 jobs is cheap.

And a rule's `require:` block: what a backend must declare in its capabilities to take a matching job
(`require: {training_data: commercially_cleared}` for a legal team's jobs)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from backends.base import BACKGROUNDS, MASK_MODES, N_MODES, QUALITIES, SIZE_MODES, TRAINING_DATA
from pipeline.deadlines import describe_s, parse_duration
from pipeline.jobs import Job

Predicate = Callable[[Job], bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(_Strict):
    """`3` (exactly), or `{min: 3}`, `{max: 1}`, `{min: 2, max: 5}` (inclusive)."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _exact(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"min": data, "max": data}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min is None and self.max is None:
            raise ValueError("give min and/or max, or a single number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def contains(self, value: int) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self, what: str) -> str:
        if self.min == self.max:
            return f"{what}={self.min}"
        if self.max is None:
            return f"{what}>={self.min}"
        if self.min is None:
            return f"{what}<={self.max}"
        return f"{self.min}<={what}<={self.max}"


class WaitRange(_Strict):
    """How long a job can wait (its `deadline`): `{min: 24h}`, `{max: 2d}` or both. A job without a deadline is
    urgent and matches no range."""

    min: float | None = None  # seconds
    max: float | None = None

    @field_validator("min", "max", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _something(self) -> WaitRange:
        if self.min is None and self.max is None:
            raise ValueError("give min and/or max, as durations such as 24h or 2d")
        return self

    def contains(self, job: Job) -> bool:
        if job.deadline is None:
            return False
        left = job.deadline.remaining_s()
        return (self.min is None or left >= self.min) and (self.max is None or left <= self.max)

    def describe(self) -> str:
        bounds = [
            f">= {describe_s(self.min)}" if self.min is not None else "",
            f"<= {describe_s(self.max)}" if self.max is not None else "",
        ]
        return "deadline " + " and ".join(b for b in bounds if b)


class TagMatch(_Strict):
    """`[a, b]` (any of them), `{any: [...]}` or `{all: [...]}` (both may be given)."""

    any: frozenset[str] | None = None
    all: frozenset[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_means_any(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"any": [data]}
        if isinstance(data, list):
            return {"any": data}
        return data

    @model_validator(mode="after")
    def _something(self) -> TagMatch:
        if not self.any and not self.all:
            raise ValueError("give a non-empty `any:` or `all:` list of tags")
        return self


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class When(_Strict):
    """Conditions on a job; all given ones must hold. An empty `when:` matches every job."""

    quality: frozenset[str] | None = None
    has_mask: bool | None = None
    images: IntRange | None = None
    n: IntRange | None = None
    size: frozenset[str] | None = None
    background: frozenset[str] | None = None
    tags: TagMatch | None = None
    prompt_length: IntRange | None = None
    prompt_regex: str | None = None
    deadline: WaitRange | None = None  # how long the job can wait (`{min: 24h}`: it can wait a day or more)

    _predicates: tuple[Predicate, ...] = PrivateAttr(default=())
    _text: str = PrivateAttr(default="any job")

    @field_validator("quality", "size", "background", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _one_or_many(v)

    @field_validator("quality")
    @classmethod
    def _qualities(cls, v: frozenset[str] | None) -> frozenset[str] | None:
        bad = sorted(set(v or ()) - set(QUALITIES))
        if bad:
            raise ValueError(f"quality must be among {', '.join(QUALITIES)}; unknown: {', '.join(bad)}")
        return v

    @field_validator("background")
    @classmethod
    def _backgrounds(cls, v: frozenset[str] | None) -> frozenset[str] | None:
        bad = sorted(set(v or ()) - set(BACKGROUNDS))
        if bad:
            raise ValueError(f"background must be among {', '.join(BACKGROUNDS)}; unknown: {', '.join(bad)}")
        return v

    @field_validator("prompt_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"a valid Python regular expression ({exc})") from None
        return v

    def model_post_init(self, _context: Any) -> None:
        preds: list[Predicate] = []
        text: list[str] = []
        if self.quality is not None:
            qs = self.quality
            preds.append(lambda j: j.request.quality in qs)
            text.append("quality in " + "|".join(sorted(qs)))
        if self.has_mask is not None:
            want = self.has_mask
            preds.append(lambda j: (j.request.mask is not None) is want)
            text.append("has a mask" if want else "has no mask")
        if self.images is not None:
            r = self.images
            preds.append(lambda j: r.contains(len(j.request.images)))
            text.append(r.describe("images"))
        if self.n is not None:
            r_n = self.n
            preds.append(lambda j: r_n.contains(j.request.n))
            text.append(r_n.describe("n"))
        if self.size is not None:
            sizes = self.size
            preds.append(lambda j: j.request.size in sizes)
            text.append("size in " + "|".join(sorted(sizes)))
        if self.background is not None:
            bgs = self.background
            preds.append(lambda j: j.request.background in bgs)
            text.append("background in " + "|".join(sorted(bgs)))
        if self.tags is not None:
            any_of, all_of = self.tags.any, self.tags.all
            if any_of:
                preds.append(lambda j: not any_of.isdisjoint(j.tags))
                text.append("tags any of " + ",".join(sorted(any_of)))
            if all_of:
                preds.append(lambda j: all_of.issubset(j.tags))
                text.append("tags all of " + ",".join(sorted(all_of)))
        if self.prompt_length is not None:
            r_p = self.prompt_length
            preds.append(lambda j: r_p.contains(len(j.request.prompt)))
            text.append(r_p.describe("prompt length"))
        if self.prompt_regex is not None:
            search = re.compile(self.prompt_regex).search
            preds.append(lambda j: search(j.request.prompt) is not None)
            text.append(f"prompt matches /{self.prompt_regex}/")
        if self.deadline is not None:
            wait = self.deadline
            preds.append(wait.contains)
            text.append(wait.describe())
        self._predicates = tuple(preds)
        self._text = ", ".join(text) or "any job"

    def predicates(self) -> tuple[Predicate, ...]:
        """The compiled conditions: a job matches when all hold (the router calls them in its hot loop)."""
        return self._predicates

    def describe(self) -> str:
        return self._text


# What a `require:` block may name: capabilities every backend declares (backends.base.Capabilities), and the
# values each may take.
REQUIRABLE: dict[str, tuple[str, ...]] = {
    "training_data": TRAINING_DATA,
    "mask_mode": MASK_MODES,
    "n_mode": N_MODES,
    "size_mode": SIZE_MODES,
}


class Require(_Strict):
    """`require: {training_data: commercially_cleared}`: a backend takes a matching job only if its capabilities
    say so (a list means any of them). Several keys must all hold. A hard constraint, like a capability: no pin,
    objective, volume shift, budget overflow or fallback sends a matching job to a backend that does not qualify."""

    training_data: frozenset[str] | None = None
    mask_mode: frozenset[str] | None = None
    n_mode: frozenset[str] | None = None
    size_mode: frozenset[str] | None = None

    @field_validator("training_data", "mask_mode", "n_mode", "size_mode", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _one_or_many(v)

    @field_validator("training_data", "mask_mode", "n_mode", "size_mode")
    @classmethod
    def _known(cls, v: frozenset[str] | None, info: Any) -> frozenset[str] | None:
        allowed = REQUIRABLE[info.field_name]
        for value in sorted(v or ()):
            if value not in allowed:
                close = difflib.get_close_matches(value, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"one of {', '.join(allowed)}{hint}")
        if v is not None and not v:
            raise ValueError(f"one of {', '.join(allowed)} (or a list of them)")
        return v

    @model_validator(mode="after")
    def _something(self) -> Require:
        if not self.wanted():
            raise ValueError(f"name at least one of {', '.join(REQUIRABLE)}")
        return self

    def wanted(self) -> dict[str, frozenset[str]]:
        return {k: v for k in REQUIRABLE if (v := getattr(self, k)) is not None}

    def misses(self, traits: Mapping[str, str]) -> str | None:
        """Why a backend declaring `traits` does not qualify (e.g. "training_data undisclosed"), or None."""
        for key, allowed in self.wanted().items():
            if traits.get(key) not in allowed:
                return f"{key} {traits.get(key, 'not declared')}"
        return None

    def describe(self) -> str:
        return ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in self.wanted().items())
