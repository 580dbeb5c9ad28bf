"""Cost formulas, in one place: token-billed API calls and GPU-seconds on self-hosted hardware.

Prices come from `configs/prices.yaml` (dated, per model); nothing here hard-codes a price. All money is
`Decimal` USD so that ledger sums are exact.
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backends.base import GifLimits, SizeRule
from backends.errors import BackendMisconfigured
from configs import PRICES_FILE

MILLION = Decimal(1_000_000)
HOURS_PER_MONTH = Decimal("730")  # 8760 h / 12
TOKEN_SIZES = ("1024x1024", "1024x1536", "1536x1024")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Section = TypeVar("_Section", bound=BaseModel)


class InputImageTokens(_Strict):
    base: int = 65
    per_tile: int = 129
    high_fidelity_square: int = 4160
    high_fidelity_oblong: int = 6240


class SizeSpec(_Strict):
    """The sizes a model takes: a fixed list, or also any WxH within OpenAI's rule (gpt-image-2 and later)."""

    presets: tuple[str, ...] = ("1024x1024", "1536x1024", "1024x1536", "auto")
    arbitrary: bool = False
    # the rule's defaults are OpenAI's, stated once in backends.base.SizeRule / GifLimits
    edge_multiple: int = Field(default=SizeRule.edge_multiple, gt=0)
    max_ratio: float = Field(default=SizeRule.max_ratio, ge=1)
    max_edge: int = Field(default=SizeRule.max_edge, gt=0)
    min_pixels: int = Field(default=SizeRule.min_pixels, ge=0)
    max_pixels: int = Field(default=SizeRule.max_pixels, gt=0)


class GifSpec(_Strict):
    frame_count: tuple[int, int] = (GifLimits.min_frames, GifLimits.max_frames)
    frame_duration_ms: tuple[int, int] = (GifLimits.min_frame_ms, GifLimits.max_frame_ms)
    max_edge_by_frames: dict[int, int] = Field(default_factory=dict)  # frames up to N -> longest frame edge


class ModelCapabilities(_Strict):
    """What one OpenAI model takes: the single table the validator and the router's filter read."""

    qualities: tuple[str, ...] = ("low", "medium", "high", "auto")
    sizes: SizeSpec = SizeSpec()
    input_fidelity: bool = False  # the model takes `input_fidelity` (never sent where False)
    transparent_background: bool = True
    complexity: bool = False
    markup: bool = False
    gif: GifSpec | None = None
    streaming: bool = False  # what the model page says; editroute's backend does not stream
    json_body: bool = True  # JSON edits (images by file_id / URL, moderation): "GPT image models only"


class BatchRates(_Strict):
    """Batch API rates (USD per 1M tokens). `verified: false`: the 50% rule applied, no published row seen."""

    text_in: Decimal
    text_in_cached: Decimal | None = None
    image_in: Decimal
    image_in_cached: Decimal | None = None
    image_out: Decimal
    verified: bool = False


class ModelPrices(_Strict):
    """One OpenAI image model or snapshot: lifecycle, USD per 1M tokens, output-token table, capabilities."""

    status: Literal["live", "deprecated", "retired"] = "live"
    released: str | None = None
    shutdown: str | None = None  # ISO date it stopped (retired) or stops (deprecated) taking requests
    replacement: tuple[str, ...] = ()  # what OpenAI names instead
    snapshot_of: str | None = None  # a dated snapshot of this alias
    as_of: str
    source: str  # a public URL
    verified: bool = True  # rates read on OpenAI's own pages (False: third-party copies)
    text_in: Decimal
    text_in_cached: Decimal | None = None
    image_in: Decimal
    image_in_cached: Decimal | None = None
    image_out: Decimal
    text_out: Decimal | None = None  # None: not priced separately (billed at image_out, to never undercount)
    batch: BatchRates | None = None
    output_tokens: dict[str, dict[str, int]] = Field(default_factory=dict)  # quality -> size -> tokens per image
    output_tokens_estimate: bool = False  # True: OpenAI publishes no table for this model: ESTIMATE
    input_image_tokens: InputImageTokens | None = None  # this model's rule; None: the table's default
    capabilities: ModelCapabilities = ModelCapabilities()
    # Features a source suggests but none settles: feature -> capability overrides, off unless a backend opts in
    # with `unverified_features: [...]` (backends.openai.models).
    unverified: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tables_cover_qualities(self) -> ModelPrices:
        if self.status == "retired":
            return self
        wanted = set(self.capabilities.qualities)
        for override in self.unverified.values():
            wanted |= set(override.get("qualities", ()))
        missing = sorted(wanted - set(self.output_tokens) - {"auto"})
        if missing:
            raise ValueError(f"output_tokens has no row for quality {', '.join(missing)}")
        for tier, row in self.output_tokens.items():
            if "1024x1024" not in row:
                raise ValueError(f"output_tokens.{tier} needs a 1024x1024 entry (other sizes scale from it)")
        return self


class PriceTable(_Strict):
    models: dict[str, ModelPrices]
    auto_quality_estimate: Literal["low", "medium", "high"] = "high"
    input_image_tokens: InputImageTokens = InputImageTokens()
    gpu_hourly: dict[str, dict[str, Decimal] | str]
    # Other hosted families' sections, validated by their own schema (backends.google.models, backends.adobe.prices)
    gemini: dict[str, Any] = Field(default_factory=dict)
    firefly: dict[str, Any] = Field(default_factory=dict)

    def model(self, model_id: str) -> ModelPrices:
        try:
            return self.models[model_id]
        except KeyError:
            known = ", ".join(sorted(self.live_models()))
            raise KeyError(
                f"no prices for model {model_id!r} in prices.yaml (live: {known}); add an entry under `models:`"
            ) from None

    def live_models(self) -> list[str]:
        return [k for k, m in self.models.items() if m.status != "retired"]

    def section(self, family: Literal["gemini", "firefly"], schema: type[_Section]) -> _Section:
        """A hosted family's own section, checked by its schema; `BackendMisconfigured` names each bad key."""
        try:
            return schema.model_validate(getattr(self, family))
        except ValidationError as exc:
            problems = "; ".join(f"{family}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise BackendMisconfigured(f"bad `{family}:` section in prices.yaml: {problems}") from None

    def gpu_rate(self, gpu: str, which: Literal["low", "high"] = "low") -> Decimal:
        entry = self.gpu_hourly.get(gpu)
        if not isinstance(entry, dict):
            known = ", ".join(k for k, v in self.gpu_hourly.items() if isinstance(v, dict))
            raise KeyError(f"no hourly rate for GPU {gpu!r} (known: {known})")
        return entry[which]


@lru_cache(maxsize=8)
def load_prices(path: str | Path | None = None) -> PriceTable:
    with open(path or PRICES_FILE, encoding="utf-8") as fh:
        return PriceTable.model_validate(yaml.safe_load(fh))


# ---- token-billed API -------------------------------------------------------------------------------


def token_cost(
    prices: ModelPrices | BatchRates,
    *,
    text_in: int,
    image_in: int,
    image_out: int,
    text_out: int = 0,
    cached_text_in: int = 0,
    cached_image_in: int = 0,
) -> Decimal:
    """USD for these tokens. `text_in`/`image_in` include their cached part, billed at the cached rate where the
    model has one; output text without a rate of its own is billed at the image output rate (never as free)."""
    cached_text_rate = getattr(prices, "text_in_cached", None) or prices.text_in
    cached_image_rate = getattr(prices, "image_in_cached", None) or prices.image_in
    text_out_rate = getattr(prices, "text_out", None) or prices.image_out
    return (
        (text_in - cached_text_in) * prices.text_in
        + cached_text_in * cached_text_rate
        + (image_in - cached_image_in) * prices.image_in
        + cached_image_in * cached_image_rate
        + image_out * prices.image_out
        + text_out * text_out_rate
    ) / MILLION


def output_size_for(size: str, width: int, height: int) -> str:
    """The billed size: `auto` follows the first input's aspect ratio, as the API does."""
    if size != "auto":
        return size
    if width > height * 1.2:
        return "1536x1024"
    if height > width * 1.2:
        return "1024x1536"
    return "1024x1024"


def output_tokens(prices: ModelPrices, quality: str, size: str, auto_quality: str = "high") -> int:
    """Output image tokens per image from the model's table; custom WxH sizes scale by area from 1024x1024."""
    tier = prices.output_tokens[auto_quality if quality == "auto" else quality]
    if size in tier:
        return tier[size]
    w, h = (int(v) for v in size.split("x"))
    return math.ceil(tier["1024x1024"] * (w * h) / (1024 * 1024))


def dearest_output_tokens(prices: ModelPrices, quality: str, auto_quality: str = "high") -> tuple[int, str]:
    """The most tokens any tabled size costs at `quality` (for an output size nobody can know before the call)."""
    tier = prices.output_tokens[auto_quality if quality == "auto" else quality]
    size = max(tier, key=lambda s: tier[s])
    return tier[size], size


def input_image_tokens(width: int, height: int, *, high_fidelity: bool, rule: InputImageTokens) -> int:
    """Fit in 2048x2048, scale the short side to 512, then 65 + 129 per 512-px tile (+ fidelity surcharge)."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = 512 / min(w, h)
    w, h = w * scale, h * scale
    tiles = math.ceil(w / 512 - 1e-9) * math.ceil(h / 512 - 1e-9)
    tokens = rule.base + rule.per_tile * tiles
    if high_fidelity:
        square = abs(width - height) <= 0.05 * max(width, height)
        tokens += rule.high_fidelity_square if square else rule.high_fidelity_oblong
    return tokens


def estimate_text_tokens(prompt: str) -> int:
    return max(1, math.ceil(len(prompt) / 4))  # ~4 characters per token in English


# ---- self-hosted GPU time ---------------------------------------------------------------------------


class OwnedHardware(_Strict):
    """A bought workstation: its price spread over its life, at the share of hours it is busy, plus power."""

    price_usd: Decimal = Field(gt=0)
    amortisation_months: int = Field(default=36, gt=0)
    utilisation: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    watts: Decimal = Field(default=Decimal("450"), ge=0)
    usd_per_kwh: Decimal = Field(default=Decimal("0.15"), ge=0)


class GpuCost(_Strict):
    """$/GPU-second from exactly one of: a rental rate, a named GPU's list price, or owned hardware."""

    hourly_usd: Decimal | None = Field(default=None, gt=0)
    gpu: str | None = None  # looked up in prices.yaml gpu_hourly (low end of the range)
    owned: OwnedHardware | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> GpuCost:
        given = [k for k in ("hourly_usd", "gpu", "owned") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of hourly_usd, gpu, owned (got {given or 'none'})")
        return self

    def usd_per_hour(self, prices: PriceTable | None = None) -> Decimal:
        if self.hourly_usd is not None:
            return self.hourly_usd
        if self.gpu is not None:
            return (prices or load_prices()).gpu_rate(self.gpu)
        o = self.owned
        assert o is not None
        busy_hours = HOURS_PER_MONTH * o.amortisation_months * o.utilisation
        return o.price_usd / busy_hours + o.watts / 1000 * o.usd_per_kwh

    def usd_per_second(self, prices: PriceTable | None = None) -> Decimal:
        return self.usd_per_hour(prices) / 3600

    def describe(self, prices: PriceTable | None = None) -> str:
        rate = self.usd_per_hour(prices).quantize(Decimal("0.0001"))
        if self.hourly_usd is not None:
            return f"rental ${rate}/h"
        if self.gpu is not None:
            return f"{self.gpu} list ${rate}/h"
        return f"owned hardware ${rate}/busy-hour"


def gpu_cost(seconds: float, rate: GpuCost, prices: PriceTable | None = None) -> Decimal:
    return Decimal(str(round(seconds, 6))) * rate.usd_per_second(prices)
