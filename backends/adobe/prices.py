"""Firefly's price: per operation (one generated image), set by the customer's contract, not published.

`configs/prices.yaml` (section `firefly:`) holds a clearly marked placeholder; a backend's
`price_per_operation_usd:` setting (the contract rate) wins over it. Every estimate and result says which.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from backends.pricing import PriceTable

log = logging.getLogger(__name__)


class FireflyPrices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: str
    source: str
    operation_usd: Decimal = Field(gt=0)
    operation_usd_is_placeholder: bool = True
    operations_per_image: dict[str, int] = Field(default_factory=lambda: {"fill": 1, "expand": 1, "instruct_edit": 1})


def firefly_prices(table: PriceTable) -> FireflyPrices:
    return table.section("firefly", FireflyPrices)


def operation_rate(prices: FireflyPrices, contract_rate: Decimal | None) -> tuple[Decimal, str]:
    """($ per operation, where it came from) for estimates and results."""
    if contract_rate is not None:
        return contract_rate, "contract rate (price_per_operation_usd)"
    if prices.operation_usd_is_placeholder:
        return prices.operation_usd, (
            "PLACEHOLDER rate from prices.yaml, not Adobe's price: set price_per_operation_usd to your contract's rate"
        )
    return prices.operation_usd, f"prices.yaml firefly.operation_usd (as of {prices.as_of})"
