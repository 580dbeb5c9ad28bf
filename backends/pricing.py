"""Cost formulas, in one place: token-billed API calls and GPU-seconds on self-hosted hardware.

Prices come from `configs/prices.yaml` (dated, per model); nothing here hard-codes a price. All money is
`Decimal` USD so that ledger sums are exact.
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from configs import PRICES_FILE

MILLION = Decimal(1_000_000)
HOURS_PER_MONTH = Decimal("730")  # 8760 h / 12
TOKEN_SIZES = ("1024x1024", "1024x1536", "1536x1024")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrices(_Strict):
    """USD per 1M tokens for one OpenAI image model, and its output-token table."""

    as_of: str
    text_in: Decimal
    image_in: Decimal
    image_out: Decimal
    text_out: Decimal = Decimal(0)
    input_fidelity: bool = True
    arbitrary_sizes: bool = False
    output_tokens: dict[Literal["low", "medium", "high"], dict[str, int]]


class InputImageTokens(_Strict):
    base: int = 65
    per_tile: int = 129
    high_fidelity_square: int = 4160
    high_fidelity_oblong: int = 6240


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
            known = ", ".join(sorted(self.models))
            raise KeyError(
                f"no prices for model {model_id!r} in prices.yaml (known: {known}); add an entry under `models:`"
            ) from None

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


def token_cost(prices: ModelPrices, *, text_in: int, image_in: int, image_out: int, text_out: int = 0) -> Decimal:
    return (
        text_in * prices.text_in
        + image_in * prices.image_in
        + image_out * prices.image_out
        + text_out * prices.text_out
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
    """Output image tokens per image from the model's table; custom WxH sizes scale by area."""
    tier = prices.output_tokens[auto_quality if quality == "auto" else quality]  # type: ignore[index]
    if size in tier:
        return tier[size]
    w, h = (int(v) for v in size.split("x"))
    return math.ceil(tier["1024x1024"] * (w * h) / (1024 * 1024))


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
