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
BASE_QUALITIES = ("low", "medium", "high", "auto")  # what every backend offers unless it says otherwise
QUALITIES = (*BASE_QUALITIES[:3], "xhigh", "max", "auto")  # xhigh/max: only models whose capabilities list them
BASE_OUTPUT_FORMATS = ("png", "jpeg", "webp")
OUTPUT_FORMATS = (*BASE_OUTPUT_FORMATS, "gif")  # gif: animated, only where a backend's `gif` limits allow it
BACKGROUNDS = ("transparent", "opaque", "auto")
INPUT_FIDELITIES = ("low", "high")
COMPLEXITIES = ("low", "medium", "high")
MODERATIONS = ("low", "auto")
MAX_IMAGES = 16
MAX_N = 10
MAX_PROMPT_CHARS = 32_000
MAX_IMAGE_BYTES = 50 * 1024 * 1024  # "each image ... less than 50MB"
MAX_SAFETY_IDENTIFIER_CHARS = 128  # OpenAI's SDK: "with a maximum length of 128 characters"
# The values of the `Capabilities` that say how a backend honours OpenAI semantics, and where its model's
# training data came from; a policy rule can `require:` any of them (pipeline.routing.rules.Require).
MASK_MODES = ("native", "paste_back")
N_MODES = ("native", "parallel_calls")
SIZE_MODES = ("native", "resized")
TRAINING_DATA = ("commercially_cleared", "undisclosed")


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
    # Fields of OpenAI's newer models (None: not asked for). Backends that have no such setting are not
    # offered jobs that set complexity, markup or GIF output (their capabilities say so); moderation and
    # safety_identifier concern only OpenAI's own filter and abuse monitoring, and other backends ignore them.
    complexity: str | None = None  # planning effort, independent of quality
    moderation: str | None = None  # low | auto
    safety_identifier: str | None = None  # a stable, hashed end-user id (supersedes `user`)
    markup: InputImage | None = None  # transparent PNG of annotations over the first image; not with a mask
    frame_count: int | None = None  # output_format gif only
    frame_duration_ms: int | None = None  # output_format gif only
    # Streamed edits (OpenAI's `stream` + `partial_images`): how many partial images to send while it runs (0-3;
    # None: not streamed). Only backends with `capabilities.streaming` take it; see `backends.live`.
    partial_images: int | None = None

    @property
    def has_mask(self) -> bool:
        return self.mask is not None

    @property
    def inputs(self) -> tuple[tuple[str, InputImage], ...]:
        """Every input image with the field that carries it: image / image[i], then mask, then markup."""
        one = len(self.images) == 1
        out = [("image" if one else f"image[{i}]", img) for i, img in enumerate(self.images)]
        if self.mask is not None:
            out.append(("mask", self.mask))
        if self.markup is not None:
            out.append(("markup", self.markup))
        return tuple(out)

    @property
    def has_remote_refs(self) -> bool:
        """Some input is given by reference (a file id or URL) rather than as bytes."""
        return any(img.is_remote for _, img in self.inputs)

    def materialized(self) -> EditRequest:
        """Bytes loaded and pixels checked, ready to run here or to pickle to another process."""
        from dataclasses import replace

        images = tuple(img.materialized(field=f"image[{i}]") for i, img in enumerate(self.images))
        mask = self.mask.materialized(field="mask") if self.mask is not None else None
        markup = self.markup.materialized(field="markup") if self.markup is not None else None
        return replace(self, images=images, mask=mask, markup=markup)


@dataclass(frozen=True)
class Usage:
    """What a call consumed: tokens for the API, GPU-seconds for self-hosted."""

    input_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    gpu_seconds: float = 0.0
    # Split further where the provider says so (OpenAI's output_tokens_details, cached input): kept in the
    # result and the ledger only when non-zero, so older records and other backends keep their shape.
    output_image_tokens: int = 0
    output_text_tokens: int = 0
    cached_text_tokens: int = 0
    cached_image_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("output_image_tokens", "output_text_tokens", "cached_text_tokens", "cached_image_tokens"):
            if not d[k]:
                del d[k]
        return d


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
class SizeRule:
    """Which custom `WxH` sizes a model takes (OpenAI's rule for the gpt-image-2 family by default)."""

    edge_multiple: int = 16
    max_ratio: float = 3.0  # long edge : short edge
    max_edge: int = 3840
    min_pixels: int = 655_360  # 1024x640
    max_pixels: int = 8_294_400  # 3840x2160

    def describe(self) -> str:
        return (
            f"WxH: both edges multiples of {self.edge_multiple}, longest edge <= {self.max_edge}, "
            f"ratio between 1:{self.max_ratio:g} and {self.max_ratio:g}:1, "
            f"{self.min_pixels:,} to {self.max_pixels:,} pixels"
        )

    def problem(self, width: int, height: int) -> str | None:
        """Why `width`x`height` breaks the rule, or None."""
        if width % self.edge_multiple or height % self.edge_multiple:
            return f"both edges must be multiples of {self.edge_multiple}"
        if max(width, height) > self.max_edge:
            return f"the longest edge is {max(width, height)} px, above {self.max_edge}"
        if max(width, height) > self.max_ratio * min(width, height):
            return f"aspect ratio {width}:{height} is outside 1:{self.max_ratio:g} to {self.max_ratio:g}:1"
        if not self.min_pixels <= width * height <= self.max_pixels:
            return f"{width * height:,} pixels is outside {self.min_pixels:,} to {self.max_pixels:,}"
        return None


DEFAULT_SIZE_RULE = SizeRule()


@dataclass(frozen=True)
class GifLimits:
    """Animated GIF output: frame count and per-frame delay limits, and the frame edge a frame count allows."""

    min_frames: int = 2
    max_frames: int = 16
    min_frame_ms: int = 20
    max_frame_ms: int = 655_350  # OpenAI caps each frame's encoded delay here
    # frames up to N -> longest frame edge in px (all frames share one sheet); empty: not checked here
    max_edge_by_frames: tuple[tuple[int, int], ...] = ()

    def max_edge(self, frames: int) -> int | None:
        for upto, edge in sorted(self.max_edge_by_frames):
            if frames <= upto:
                return edge
        return None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can honour. The router filters on this before anything runs."""

    max_images: int = MAX_IMAGES
    mask_optional: bool = True  # can run a request without a mask
    sizes: frozenset[str] = frozenset(SIZES)
    arbitrary_sizes: bool = False  # any WxH that `size_rule` allows, as gpt-image-2 takes
    size_rule: SizeRule = DEFAULT_SIZE_RULE
    qualities: frozenset[str] = frozenset(BASE_QUALITIES)
    max_n: int = MAX_N
    formats: frozenset[str] = frozenset(BASE_OUTPUT_FORMATS)
    reference_images: bool = True  # images after the first are used (compositing), not ignored
    transparent_background: bool = True
    input_fidelity: bool = True
    max_image_bytes: int = MAX_IMAGE_BYTES
    # How OpenAI semantics are honoured where the provider has no direct equivalent (the router and
    # `plan --explain` show these; nothing is dropped silently):
    mask_mode: str = "native"  # MASK_MODES. "native": the model inpaints | "paste_back": whole-image edit, composited
    n_mode: str = "native"  # N_MODES. "native": one call makes n images | "parallel_calls": n calls, each billed
    size_mode: str = "native"  # SIZE_MODES. "resized": the provider's nearest size, resized/cropped to the request
    # TRAINING_DATA, for licence rules: "commercially_cleared" (the vendor licenses its training data for commercial
    # use, e.g. Adobe Firefly) | "undisclosed" (the vendor does not say; every other backend today)
    training_data: str = "undisclosed"
    # OpenAI's newer request fields; off unless a backend's model takes them.
    complexity: bool = False
    markup: bool = False  # a markup layer (annotations) over the first image
    gif: GifLimits | None = None  # animated output, when "gif" is in `formats`
    remote_refs: bool = False  # inputs given as a file id or https URL (OpenAI's JSON body)
    streaming: bool = False  # partial images while the edit runs (`partial_images`, `backends.live`)
    # Results come back within this many seconds, not at once (a batch lane: OpenAI's Batch API, 24 h). The
    # router offers such a backend only jobs with a deadline at least this far off. None: a synchronous call.
    turnaround_s: float | None = None


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
