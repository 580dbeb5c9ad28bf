"""OpenAI image models as data: lifecycle, rates and what each takes, from `configs/prices.yaml` (`models:`).

A model id is configuration, never code. `resolve()` refuses a retired model before anything runs (naming its
shutdown date and replacement), warns about a deprecated one, and takes a model prices.yaml does not know only
when the policy gives its rates (billed from usage at those rates, never as free). `capabilities()` turns the
model's table into the `Capabilities` the validator and the router read, plus the unverified features a backend
opted into with `unverified_features:`.
"""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.base import BASE_OUTPUT_FORMATS, Capabilities, GifLimits, SizeRule
from backends.errors import BackendMisconfigured
from backends.pricing import ModelCapabilities, ModelPrices, PriceTable

log = logging.getLogger(__name__)

# The table an unknown model's estimates use (labelled ESTIMATE): the only one OpenAI publishes for a 2.x model.
ESTIMATE_TABLE_FROM = "gpt-image-2"


class PolicyRates(BaseModel):
    """USD per 1M tokens for a model prices.yaml does not list (or to override its rates, e.g. a contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_in: Decimal = Field(gt=0)
    image_in: Decimal = Field(gt=0)
    image_out: Decimal = Field(gt=0)
    text_out: Decimal | None = Field(default=None, gt=0)
    text_in_cached: Decimal | None = Field(default=None, ge=0)
    image_in_cached: Decimal | None = Field(default=None, ge=0)


def _live_list(table: PriceTable) -> str:
    return ", ".join(k for k, m in table.models.items() if m.status == "live" and m.snapshot_of is None)


def resolve(
    model_id: str, table: PriceTable, *, rates: PolicyRates | None = None, today: date | None = None
) -> ModelPrices:
    """The model's entry (with the policy's rates, if given), or `BackendMisconfigured` before any call."""
    entry = table.models.get(model_id)
    if entry is None:
        if rates is None:
            raise BackendMisconfigured(
                f"OpenAI model {model_id!r} is not in prices.yaml (live: {_live_list(table)}); to use a new model, "
                f"give its USD per 1M tokens in the policy backend: rates: {{text_in: ..., image_in: ..., "
                f"image_out: ...}}"
            )
        base = table.models[ESTIMATE_TABLE_FROM]
        log.warning(
            "OpenAI model %r is not in prices.yaml: billed from usage at the policy's rates; estimates use %s's "
            "output-token table (ESTIMATE) and its capabilities are the conservative defaults",
            model_id,
            ESTIMATE_TABLE_FROM,
        )
        return ModelPrices(
            status="live",
            as_of=date.today().isoformat(),
            source="the policy's `rates:`",
            verified=False,
            output_tokens=base.output_tokens,
            output_tokens_estimate=True,
            input_image_tokens=base.input_image_tokens,
            capabilities=ModelCapabilities(),
            **rates.model_dump(),
        )
    if entry.status == "retired":
        instead = " or ".join(repr(r) for r in entry.replacement) or f"a live model ({_live_list(table)})"
        raise BackendMisconfigured(
            f"OpenAI model {model_id!r} was shut down on {entry.shutdown or 'an earlier date'}; use {instead} "
            f"(source: {entry.source})"
        )
    if entry.status == "deprecated":
        past = entry.shutdown is not None and date.fromisoformat(entry.shutdown) <= (today or date.today())
        when = (
            f"{'was to shut down' if past else 'shuts down'} on {entry.shutdown}" if entry.shutdown else "is deprecated"
        )
        instead = f"; move to {' or '.join(entry.replacement)}" if entry.replacement else ""
        log.warning("OpenAI model %r %s%s (source: %s)", model_id, when, instead, entry.source)
    if rates is not None:
        entry = entry.model_copy(update={**rates.model_dump(exclude_none=True), "verified": False})
    return entry


def _enabled(entry: ModelPrices, model_id: str, features: tuple[str, ...]) -> ModelCapabilities:
    """The model's capabilities with the opted-in unverified features applied."""
    unknown = [f for f in features if f not in entry.unverified]
    if unknown:
        offered = ", ".join(entry.unverified) or "none"
        raise BackendMisconfigured(
            f"unverified_features: {', '.join(unknown)} not offered for {model_id!r} (its unverified features: "
            f"{offered}; see docs/openai.md)"
        )
    data: dict[str, Any] = entry.capabilities.model_dump()
    for name in features:
        data.update(entry.unverified[name])
        log.info("%s: unverified feature %r enabled by the policy", model_id, name)
    try:
        return ModelCapabilities.model_validate(data)
    except ValidationError as exc:
        raise BackendMisconfigured(f"prices.yaml: bad unverified feature for {model_id!r}: {exc}") from None


def capabilities(entry: ModelPrices, model_id: str, features: tuple[str, ...] = ()) -> Capabilities:
    """The `Capabilities` this model (plus the opted-in unverified features) gives an OpenAI backend."""
    caps = _enabled(entry, model_id, features)
    sizes = caps.sizes
    formats = set(BASE_OUTPUT_FORMATS) | ({"gif"} if caps.gif is not None else set())
    gif = None
    if caps.gif is not None:
        gif = GifLimits(
            min_frames=caps.gif.frame_count[0],
            max_frames=caps.gif.frame_count[1],
            min_frame_ms=caps.gif.frame_duration_ms[0],
            max_frame_ms=caps.gif.frame_duration_ms[1],
            max_edge_by_frames=tuple(sorted(caps.gif.max_edge_by_frames.items())),
        )
    return Capabilities(
        sizes=frozenset(sizes.presets),
        arbitrary_sizes=sizes.arbitrary,
        size_rule=SizeRule(
            edge_multiple=sizes.edge_multiple,
            max_ratio=sizes.max_ratio,
            max_edge=sizes.max_edge,
            min_pixels=sizes.min_pixels,
            max_pixels=sizes.max_pixels,
        ),
        qualities=frozenset(caps.qualities),
        formats=frozenset(formats),
        transparent_background=caps.transparent_background,
        input_fidelity=caps.input_fidelity,
        complexity=caps.complexity,
        markup=caps.markup,
        gif=gif,
        remote_refs=caps.json_body,
        streaming=caps.streaming,
    )


def lifecycle_rows(table: PriceTable) -> list[tuple[str, str, str | None]]:
    """(model id, status, shutdown date) for every OpenAI model in prices.yaml, for `doctor`."""
    return [(k, m.status, m.shutdown) for k, m in table.models.items()]
