"""Helpers for tests of the hosted backends beyond OpenAI (Gemini, Firefly) against their loopback stand-ins."""

from __future__ import annotations

from decimal import Decimal

from backends.google import models
from backends.pricing import load_prices
from backends.standins.gemini_server import FakeGeminiServer

LITE = "gemini-3.1-flash-lite-image"


def billed_by_gemini(srv: FakeGeminiServer, model: str = LITE) -> Decimal:
    """What Google would bill for every call the stand-in answered with an image, from ITS usageMetadata, at the
    table's rates (the check that a backend's or the ledger's cost is the provider's bill, not an estimate)."""
    m = models.resolve(model, load_prices())
    total = Decimal(0)
    for call in srv.calls:
        u = call.response_usage
        if not u:
            continue
        text_out = u["candidatesTokenCount"] - u["candidatesTokensDetails"][0]["tokenCount"] + u["thoughtsTokenCount"]
        total += models.cost(
            m,
            models.TokenCounts(
                text_in=u["promptTokensDetails"][0]["tokenCount"],
                image_in=u["promptTokensDetails"][1]["tokenCount"],
                image_out=u["candidatesTokensDetails"][0]["tokenCount"],
                text_out=text_out,
            ),
        )
    return total
