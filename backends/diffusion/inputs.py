"""Request-side pieces every diffusion family shares (no torch): decoding an input image with an error that names
it, the request's mask as a repaint mask (a mask with nothing to edit refused), and the paste-back ramp at an output
size."""

from __future__ import annotations

from PIL import Image

from backends import canvas as px
from backends.base import EditRequest
from backends.errors import InvalidRequest


def open_input(img, field: str) -> Image.Image:
    """The decoded image; a file that stopped decoding since it was checked is the request's problem, named."""
    try:
        return img.open()
    except Exception as exc:  # validated at probe time; a file changed underneath us
        raise InvalidRequest(f"{field}: cannot decode {img.name}: {exc}", field=field, value=img.name) from None


def nothing_to_edit(request: EditRequest) -> InvalidRequest:
    """A mask without one fully transparent pixel: refused before any GPU time (it would bill for no change)."""
    limit = "at least one fully transparent pixel"
    return InvalidRequest(
        f"mask: no pixel is fully transparent, so there is nothing to edit (alpha 0 marks the area to change) "
        f"(limit: {limit})",
        field="mask",
        value=request.mask.name if request.mask is not None else None,
        limit=limit,
        job_id=request.job_id,
    )


def given_mask(request: EditRequest, size: tuple[int, int]) -> tuple[Image.Image, float]:
    """The request's mask as a repaint mask (L, white = repaint) at `size`, and the share of the image it edits
    (1.0: every pixel, a whole-image edit). A mask with nothing to edit is refused here."""
    assert request.mask is not None
    repaint = px.repaint_mask(request.mask.open(), size)
    area = px.edit_area(repaint)
    if area == 0.0:
        raise nothing_to_edit(request)
    return repaint, area


def feather_at(feather_px: int, out_size: tuple[int, int]) -> int:
    """`feather_px` is for ~1024-px outputs; small outputs get a proportionally smaller ramp."""
    scale = min(1.0, max(out_size) / 1024)
    return max(1, round(feather_px * scale)) if feather_px else 0
