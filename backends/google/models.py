"""Gemini image models as data: rates, lifecycle and limits from `configs/prices.yaml` (section `gemini:`).

A model id is configuration, never code: a new model is a new entry there. `resolve()` refuses a retired or
unknown model before anything runs (the API would answer 404) and warns about a deprecated one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.errors import BackendMisconfigured
from backends.pricing import MILLION, PriceTable

log = logging.getLogger(__name__)


class GeminiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["live", "deprecated", "retired"]
    released: str
    shutdown: str | None = None  # Google's announced (earliest) shutdown date, ISO
    replacement: str | None = None
    as_of: str
    source: str  # a public URL
    verified: bool = False  # rates read on Google's own page (True) or from third-party copies (False)
    text_in: Decimal | None = None  # USD per 1M tokens, from here down
    image_in: Decimal | None = None
    text_out: Decimal | None = None  # text and thinking tokens
    image_out: Decimal | None = None
    output_image_tokens: int | None = None  # per 1K image
    input_image_tokens: int | None = None  # per input image, for estimates
    image_size: str | None = None  # the `imageSize` to send; None: do not send it
    max_images: int = Field(default=3, ge=1)
    aspect_ratios: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _usable_unless_retired(self) -> GeminiModel:
        needed = ("text_in", "image_in", "text_out", "image_out", "output_image_tokens", "input_image_tokens")
        missing = [k for k in needed if getattr(self, k) is None]
        if self.status != "retired" and (missing or not self.aspect_ratios):
            raise ValueError(f"a {self.status} model needs {', '.join(missing) or 'aspect_ratios'}")
        return self


class GeminiCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aspect_ratio_sets: dict[str, list[str]] = Field(default_factory=dict)  # YAML anchors live here
    models: dict[str, GeminiModel]


def catalog(table: PriceTable) -> GeminiCatalog:
    return table.section("gemini", GeminiCatalog)


def resolve(model_id: str, table: PriceTable, *, today: date | None = None) -> GeminiModel:
    """The model's entry, or `BackendMisconfigured` if it is unknown or retired (the API would answer 404)."""
    models = catalog(table).models
    live = sorted(k for k, m in models.items() if m.status != "retired")
    m = models.get(model_id)
    if m is None:
        raise BackendMisconfigured(
            f"no Gemini model {model_id!r} in prices.yaml (known: {', '.join(live)}); "
            f"add an entry under `gemini.models:`"
        )
    instead = f"; use {m.replacement!r}" if m.replacement else f" (live: {', '.join(live)})"
    if m.status == "retired":
        raise BackendMisconfigured(
            f"Gemini model {model_id!r} was shut down on {m.shutdown or 'an earlier date'}"
            f"{instead} (source: {m.source})"
        )
    if m.status == "deprecated":
        past = m.shutdown is not None and date.fromisoformat(m.shutdown) <= (today or date.today())
        when = (
            f"{'was announced to shut down' if past else 'shuts down'} on {m.shutdown}"
            if m.shutdown
            else "is deprecated"
        )
        log.warning("Gemini model %r %s%s; calls may fail with 404 (source: %s)", model_id, when, instead, m.source)
    return m


# ---- cost -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCounts:
    """One generateContent call's billed tokens, split the way the rates are."""

    text_in: int = 0
    image_in: int = 0
    text_out: int = 0  # includes thinking tokens
    image_out: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.text_in + other.text_in,
            self.image_in + other.image_in,
            self.text_out + other.text_out,
            self.image_out + other.image_out,
        )


def cost(m: GeminiModel, t: TokenCounts) -> Decimal:
    """Exact USD for `t` at the model's rates."""
    assert m.text_in is not None and m.image_in is not None and m.text_out is not None and m.image_out is not None
    return (
        t.text_in * m.text_in + t.image_in * m.image_in + t.text_out * m.text_out + t.image_out * m.image_out
    ) / MILLION


def estimate_tokens(m: GeminiModel, prompt: str, n_images: int) -> TokenCounts:
    """One call's tokens before it is made: ~4 characters per text token, the model's per-image figures."""
    assert m.input_image_tokens is not None and m.output_image_tokens is not None
    return TokenCounts(
        text_in=max(1, math.ceil(len(prompt) / 4)),
        image_in=m.input_image_tokens * n_images,
        image_out=m.output_image_tokens,
    )
