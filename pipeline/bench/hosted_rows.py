"""The cost-per-image rows of the hosted backends priced outside OpenAI's token tables: Google's Gemini image
models (tokens from `usageMetadata`, one tier: quality is not sent) and Adobe Firefly (operations x the contract
rate, marked when it is prices.yaml's PLACEHOLDER). Same shape as the OpenAI rows (`PerImage`, scenario "API"),
so plans, break-evens and the headline include them; priced the way each backend's `estimate()` prices a job."""

from __future__ import annotations

from decimal import Decimal

from backends.adobe.prices import firefly_prices, operation_rate
from backends.google import models as gemini_models
from backends.pricing import PriceTable
from pipeline.bench.cost import REFERENCE_PROMPT, PerImage

FIREFLY_ROW = "firefly"


def gemini_rows(prices: PriceTable, tiers: tuple[str, ...], sizes: tuple[str, ...]) -> list[PerImage]:
    """Every live or deprecated Gemini image model: one 1K output image and one input image per edit, the same
    at every tier (Gemini has one tier per model) and size (made at 1K, resized to the size)."""
    rows = []
    for model_id, m in gemini_models.catalog(prices).models.items():
        if m.status == "retired":
            continue
        one = gemini_models.estimate_tokens(m, REFERENCE_PROMPT, 1)
        out_usd = gemini_models.cost(m, gemini_models.TokenCounts(image_out=one.image_out))
        in_usd = gemini_models.cost(m, gemini_models.TokenCounts(text_in=one.text_in, image_in=one.image_in))
        basis = (
            f"{one.image_out} out x ${m.image_out}/1M + ({one.image_in} image + {one.text_in} text) in x "
            f"${m.image_in}/${m.text_in}/1M; one tier (quality is not sent)"
            + ("" if m.verified else "; rates from third-party copies of Google's page")
        )
        rows += [PerImage(model_id, "API", t, s, out_usd, in_usd, None, basis) for t in tiers for s in sizes]
    return rows


def firefly_rows(
    prices: PriceTable, tiers: tuple[str, ...], sizes: tuple[str, ...], contract_rate: Decimal | None = None
) -> tuple[list[PerImage], str]:
    """Firefly fill: operations per image x the rate (`contract_rate`, else prices.yaml's); and its label, which
    says PLACEHOLDER when the rate is not a contract's."""
    ff = firefly_prices(prices)
    rate, rate_basis = operation_rate(ff, contract_rate)
    ops = ff.operations_per_image.get("fill", 1)
    basis = f"{ops} operation(s) x ${rate} ({rate_basis})"
    placeholder = contract_rate is None and ff.operation_usd_is_placeholder
    label = (
        f"{FIREFLY_ROW} (PLACEHOLDER ${rate}/operation, not Adobe's price: pass --firefly-operation-usd)"
        if placeholder
        else f"{FIREFLY_ROW} (${rate}/operation)"
    )
    rows = [PerImage(FIREFLY_ROW, "API", t, s, ops * rate, Decimal(0), None, basis) for t in tiers for s in sizes]
    return rows, label
