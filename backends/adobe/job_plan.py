"""What one Firefly request uploads, sends, and does to the answers, by mode; geometry decided once.

fill: the canvas (input on the output size, `backends.hosted_canvas`) and its mask (white = edit) letterboxed into
the nearest of Firefly's fill sizes; answers are cropped back out of the letterbox. expand: the original, to the
requested size. instruct: the original (scaled into Image 5's reference area if needed), at the smallest
resolution level not below the output.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from backends import hosted_canvas
from backends.adobe import wire
from backends.base import EditRequest


def split_parts(mode: str, n: int, seed: int | None) -> list[tuple[int, tuple[int, ...] | None]]:
    """(variations, seeds) per job: up to 4 variations per fill/expand job, 1 per Image 5 job. A request's seed
    gives each variation its own (Firefly wants them unique), kept in 32-bit range."""
    per_job = 1 if mode == "instruct" else wire.MAX_VARIATIONS
    out, done = [], 0
    while done < n:
        k = min(per_job, n - done)
        out.append((k, tuple((seed + done + i) % 2**31 for i in range(k)) if seed is not None else None))
        done += k
    return out


class JobPlan:
    """What one request uploads, sends and does to the answers, by mode (geometry decided once)."""

    def __init__(
        self,
        mode: str,
        finish_plan: hosted_canvas.Plan,
        files: list[tuple[Image.Image | bytes, str]],
        size: tuple[int, int] | None,
        crop: tuple[int, int, int, int] | None,
        notes: dict[str, Any],
    ):
        self.mode, self.finish_plan, self._files, self.size, self.crop, self.notes = (
            mode,
            finish_plan,
            files,
            size,
            crop,
            notes,
        )

    @classmethod
    def make(cls, request: EditRequest, mode: str, paste_back: bool) -> JobPlan:
        first = request.images[0]
        if mode == "fill":
            plan = hosted_canvas.prepare(request)
            assert plan.canvas is not None and plan.repaint is not None and plan.out_size is not None
            size = wire.nearest_fill_size(*plan.out_size)
            image, mask, box = wire.letterbox(plan.canvas, plan.repaint, size)
            finish = plan if paste_back else hosted_canvas.Plan(out_size=plan.out_size)
            return cls(
                mode,
                finish,
                [(image, "image/png"), (mask, "image/png")],
                size,
                box,
                {"fill_size": f"{size[0]}x{size[1]}"},
            )
        if mode == "expand":
            out = hosted_canvas.parse_wxh(request.size)
            assert out is not None
            return cls(mode, hosted_canvas.Plan(out_size=out), [(first.read(), first.mime)], out, None, {})
        plan = hosted_canvas.prepare(request)  # `auto`: the input's own size (THE SIZE RULE, backends.canvas)
        assert plan.out_size is not None
        ref = wire.reference_size(first.width, first.height)
        files: list[tuple[Image.Image | bytes, str]] = [(first.read(), first.mime)]
        if ref != first.size or first.nbytes > 10 * 1024 * 1024:
            files = [(first.open().convert("RGB").resize(ref, Image.Resampling.LANCZOS), "image/png")]
        level = wire.resolution_level(*plan.out_size)
        return cls(mode, plan, files, None, None, {"resolution_level": level})

    def uploads(self) -> list[tuple[bytes, str]]:
        out = []
        for item, mime in self._files:
            if isinstance(item, Image.Image):
                buf = io.BytesIO()
                item.save(buf, format="PNG")
                data = buf.getvalue()
                if len(data) > wire.UPLOAD_LIMIT:  # a noisy 2304x1792 PNG can pass 15 MB: JPEG it
                    buf = io.BytesIO()
                    item.convert("RGB").save(buf, format="JPEG", quality=95)
                    data, mime = buf.getvalue(), "image/jpeg"
                out.append((data, mime))
            else:
                out.append((item, mime))
        return out

    def body(
        self,
        ids: tuple[str, ...],
        request: EditRequest,
        variations: int,
        seeds: tuple[int, ...] | None,
        locale: str | None,
    ) -> dict[str, Any]:
        if self.mode == "fill":
            assert self.size is not None
            return wire.fill_body(ids[0], ids[1], request.prompt, self.size, variations, seeds, locale)
        if self.mode == "expand":
            assert self.size is not None
            return wire.expand_body(ids[0], request.prompt, self.size, variations, seeds)
        return wire.instruct_body(
            ids[0], request.prompt, self.notes["resolution_level"], seeds[0] if seeds else None, locale
        )
