"""What an OpenAI edit will cost, before the call: no network, no image decoding.

Output tokens come from the model's table in prices.yaml (official for gpt-image-2; for models OpenAI publishes
none for, an estimate the basis labels ESTIMATE), input image tokens from the model's tile rule. What cannot be
known before the call is estimated on the dear side and said so: a remote reference's size (the rule's largest
tile count), `size: auto` with a remote first image (the dearest tabled size), GIF frames (one image per frame).
"""

from __future__ import annotations

from backends.base import CostEstimate, EditRequest
from backends.pricing import (
    ModelPrices,
    PriceTable,
    dearest_output_tokens,
    estimate_text_tokens,
    input_image_tokens,
    output_size_for,
    output_tokens,
    token_cost,
)

GIF_DEFAULT_FRAMES = 9  # OpenAI's default frame_count
# A remote reference's size is unknown: the tile rule's worst case (2048x512 fills 4 tiles after scaling).
UNKNOWN_INPUT_SIZE = (2048, 512)


def estimate_cost(request: EditRequest, prices: ModelPrices, table: PriceTable, *, model: str) -> CostEstimate:
    quality = table.auto_quality_estimate if request.quality == "auto" else request.quality
    notes: list[str] = []
    first = request.images[0] if request.images else None
    if first is not None and first.is_remote and request.size == "auto":
        out_each, size = dearest_output_tokens(prices, request.quality, table.auto_quality_estimate)
        notes.append(f"output size unknown (remote first image, size auto): dearest tabled size {size}")
    else:
        size = output_size_for(request.size, first.width, first.height) if first and not first.is_remote else None
        size = size or (request.size if request.size != "auto" else "1024x1024")
        out_each = output_tokens(prices, request.quality, size, table.auto_quality_estimate)
    label = f"{quality} {size}"
    if request.output_format == "gif":
        frames = request.frame_count or GIF_DEFAULT_FRAMES
        out_each *= frames
        label += f", gif {frames} frames as {frames} images"
        notes.append("GIF billing is not published: one image per frame")
    rule = prices.input_image_tokens or table.input_image_tokens
    high = request.input_fidelity == "high" and prices.capabilities.input_fidelity
    inputs = [img for img in request.images] + ([request.markup] if request.markup is not None else [])
    image_in = 0
    remote = 0
    for img in inputs:
        w, h = UNKNOWN_INPUT_SIZE if img.is_remote else img.size
        remote += img.is_remote
        image_in += input_image_tokens(w, h, high_fidelity=high, rule=rule)
    if remote:
        notes.append(f"{remote} remote input(s) of unknown size counted at the tile rule's largest")
    text_in = estimate_text_tokens(request.prompt)
    usd = token_cost(prices, text_in=text_in, image_in=image_in, image_out=out_each * request.n)
    estimated = prices.output_tokens_estimate or bool(notes)
    rule_note = ", model's own tile rule" if prices.input_image_tokens is not None else ""
    basis = (
        f"{'ESTIMATE: ' if estimated else ''}{request.n} x {out_each} output tokens ({label}) x ${prices.image_out}/1M"
        f" + {image_in} input image tokens ({len(inputs)} image(s){', high fidelity' if high else ''}{rule_note})"
        f" x ${prices.image_in}/1M + ~{text_in} text tokens x ${prices.text_in}/1M = ${usd:.4f} ({model})"
    )
    if prices.output_tokens_estimate:
        notes.insert(0, "OpenAI publishes no output-token table for this model")
    if notes:
        basis += "; " + "; ".join(notes)
    return CostEstimate(usd=usd, basis=basis)
