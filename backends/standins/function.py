"""`FunctionBackend`: a real `EditBackend` whose work is a plain function, for tests, benchmarks and demos.

Like httpx's `MockTransport(handler)`: the handler gets the request and returns images (or raises an
`EditError`); everything else (capabilities, estimate, cost, result shape) behaves like a real backend.
As `kind: function` in a policy it is refused unless `$EDITROUTE_ALLOW_STANDINS=1` (backends/registry.py), and
its results say they come from a stand-in (the model name and `extras["stand_in"]`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from PIL import Image

from backends.base import Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.validation import check_request

Handler = Callable[[EditRequest], "list[bytes] | EditResult"]


def solid_images(request: EditRequest, colour=(128, 128, 128)) -> list[bytes]:
    """n images the size of the first input, in the requested format: the default handler."""
    w, h = request.images[0].size
    out = []
    for _ in range(request.n):
        buf = io.BytesIO()
        mode = "RGBA" if request.output_format != "jpeg" else "RGB"
        Image.new(mode, (w, h), colour).save(buf, format=request.output_format.upper())
        out.append(buf.getvalue())
    return out


@dataclass
class FunctionBackend:
    name: str = "function"
    handler: Handler = solid_images
    cost_per_image: Decimal = Decimal("0.01")
    capabilities: Capabilities = field(default_factory=Capabilities)
    model: str = "stand-in:function"
    latency_s: float = 0.0
    calls: int = 0
    stand_in = "test-only `kind: function` backend: its images are not a real edit"  # class attribute, for reports

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> FunctionBackend:
        caps = settings.pop("capabilities", None)
        backend = cls(name=name, **{k: (Decimal(str(v)) if k == "cost_per_image" else v) for k, v in settings.items()})
        if caps:
            backend.capabilities = Capabilities(
                **{k: (frozenset(v) if isinstance(v, list) else v) for k, v in caps.items()}
            )
        return backend

    def estimate(self, request: EditRequest) -> CostEstimate:
        return CostEstimate(
            usd=self.cost_per_image * request.n,
            basis=f"{request.n} x ${self.cost_per_image}/image",
            seconds=self.latency_s,
        )

    def edit(self, request: EditRequest) -> EditResult:
        check_request(request, self.capabilities, backend=self.name)
        self.calls += 1
        start = time.perf_counter()
        if self.latency_s:
            time.sleep(self.latency_s)
        out = self.handler(request)
        if isinstance(out, EditResult):
            return out
        elapsed = time.perf_counter() - start
        w, h = Image.open(io.BytesIO(out[0])).size if out else request.images[0].size
        return EditResult(
            images=tuple(out),
            output_format=request.output_format,
            width=w,
            height=h,
            backend=self.name,
            model=self.model,
            usage=Usage(),
            cost_usd=self.cost_per_image * len(out),
            timings={"total_s": elapsed},
            seed=request.seed,
            quality=request.quality,
            extras={"stand_in": self.stand_in},
        )

    def close(self) -> None:
        pass
