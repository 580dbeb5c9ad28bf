"""The contract between editroute and its backends.

A backend is anything with `name`, `capabilities`, `estimate()`, `edit()` and `close()` (`EditBackend`,
a structural Protocol: fakes need no inheritance). Requests and results use the OpenAI edit API's own
field names; `seed` is extra, for self-hosted backends. Mask semantics are OpenAI's everywhere here: a PNG
whose fully transparent pixels (alpha 0) mark the region to edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from backends.images import InputImage

SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
QUALITIES = ("low", "medium", "high", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
INPUT_FIDELITIES = ("low", "high")
MAX_IMAGES = 16
MAX_N = 10
MAX_PROMPT_CHARS = 32_000
MAX_IMAGE_BYTES = 50 * 1024 * 1024  # "each image ... less than 50MB"


@dataclass(frozen=True)
class EditRequest:
    prompt: str
    images: tuple[InputImage, ...]
    mask: InputImage | None = None
    size: str = "auto"
    quality: str = "auto"
    n: int = 1
    output_format: str = "png"
    output_compression: int | None = None
    background: str = "auto"
    input_fidelity: str | None = None
    user: str | None = None
    seed: int | None = None
    job_id: str | None = None  # names the job in errors and logs; not sent anywhere

    @property
    def has_mask(self) -> bool:
        return self.mask is not None

    def materialized(self) -> EditRequest:
        """Bytes loaded and pixels checked, ready to run here or to pickle to another process."""
        from dataclasses import replace

        images = tuple(img.materialized(field=f"image[{i}]") for i, img in enumerate(self.images))
        mask = self.mask.materialized(field="mask") if self.mask is not None else None
        return replace(self, images=images, mask=mask)


@dataclass(frozen=True)
class Usage:
    """What a call consumed: tokens for the API, GPU-seconds for self-hosted."""

    input_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    gpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CostEstimate:
    usd: Decimal
    basis: str  # how it was computed, for `plan --explain` ("4160 output tokens x $40/1M + ...")
    seconds: float | None = None  # expected wall time, when known


@dataclass(frozen=True)
class EditResult:
    images: tuple[bytes, ...]  # encoded in `output_format`
    output_format: str
    width: int
    height: int
    backend: str
    model: str
    usage: Usage
    cost_usd: Decimal
    timings: Mapping[str, float] = field(default_factory=dict)  # e.g. {"total_s": 2.1, "gpu_s": 1.9}
    seed: int | None = None
    quality: str = "auto"  # the tier that actually ran
    background: str = "opaque"
    extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"mask_inferred": True}
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # files to keep beside outputs

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can honour. The router filters on this before anything runs."""

    max_images: int = MAX_IMAGES
    mask_optional: bool = True  # can run a request without a mask
    sizes: frozenset[str] = frozenset(SIZES)
    arbitrary_sizes: bool = False  # any WxH (multiples of 16, ratio <= 3:1), as gpt-image-2 takes
    qualities: frozenset[str] = frozenset(QUALITIES)
    max_n: int = MAX_N
    formats: frozenset[str] = frozenset(OUTPUT_FORMATS)
    reference_images: bool = True  # images after the first are used (compositing), not ignored
    transparent_background: bool = True
    input_fidelity: bool = True
    max_image_bytes: int = MAX_IMAGE_BYTES
    # How OpenAI semantics are honoured where the provider has no direct equivalent (the router and
    # `plan --explain` show these; nothing is dropped silently):
    mask_mode: str = "native"  # "native": the model inpaints | "paste_back": whole-image edit, composited outside
    n_mode: str = "native"  # "native": one call makes n images | "parallel_calls": n calls, each billed
    size_mode: str = "native"  # "native" | "resized": the provider's nearest size, resized/cropped to the request
    training_data: str = "undisclosed"  # provenance, for licence rules: "commercially_cleared" | "undisclosed"


@runtime_checkable
class EditBackend(Protocol):
    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    def estimate(self, request: EditRequest) -> CostEstimate:
        """Predict the cost before any spend. Cheap: no network, no GPU, no image decoding."""
        ...

    def edit(self, request: EditRequest) -> EditResult:
        """Run the edit. Raises only `backends.errors.EditError` subclasses."""
        ...

    def close(self) -> None: ...
