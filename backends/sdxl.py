"""`SDXLInpaintBackend`: self-hosted SDXL inpainting (diffusers `StableDiffusionXLInpaintPipeline`).

Same request and result as the API backend. Inside: OpenAI's mask (alpha 0 = edit) becomes diffusers'
(white = repaint); the model runs at a working size near `target_megapixels`; the result is mapped back to the
output size and pasted onto the original through an inward-feathered mask, so pixels outside the mask are
unchanged; `n` is one batched call (`num_images_per_prompt`); `seed` makes it reproducible; the cost is the
measured device-seconds x the configured $/GPU-second.

Settings and tiers: `backends.sdxl_settings`. Pixels: `backends.sdxl_images`. torch side: `backends.sdxl_runtime`.
Building the backend, its capabilities and `estimate()` never load the model or import torch.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import ValidationError

from backends import sdxl_images as px
from backends.base import MAX_IMAGES, Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.errors import BackendUnavailable, EditError, InvalidRequest
from backends.masking import InferredMask, infer_mask
from backends.pricing import gpu_cost
from backends.sdxl_settings import DEFAULT_MODEL, TIERS, Settings, Tier
from backends.validation import check_request

__all__ = ["DEFAULT_MODEL", "TIERS", "SDXLInpaintBackend", "Settings", "Tier", "choose_mask"]

log = logging.getLogger(__name__)

# Measured seconds per work unit (guided step x 1024^2 px x image), per (model, device, dtype) this process ran.
_EMA_WEIGHT = 0.3
_rates: dict[tuple[str, str, str], float] = {}
_rates_lock = threading.Lock()


@dataclass(frozen=True)
class MaskChoice:
    mask: Image.Image  # repaint mask (L, white = repaint) at the input image's size
    source: str  # "given" | "inferred" | "img2img"
    inferred: InferredMask | None = None  # the derived mask, kept beside the outputs as mask.png


def choose_mask(request: EditRequest, settings: Settings, image: Image.Image) -> MaskChoice:
    """Which pixels to repaint: the request's mask; else one inferred from the prompt (`mask_inference`);
    else the whole image (`maskless: img2img`); else refuse."""
    if request.mask is not None:
        return MaskChoice(px.repaint_mask(request.mask.open(), image.size), "given")
    if settings.mask_inference is not None:
        ms = settings.mask_inference
        if ms.device == "auto":  # run next to the pipeline
            ms = ms.model_copy(update={"device": settings.device})
        found = infer_mask(image, request.prompt, ms, job_id=request.job_id)
        return MaskChoice(px.repaint_mask(Image.open(io.BytesIO(found.mask_png)), image.size), "inferred", found)
    if settings.maskless == "img2img":
        return MaskChoice(px.repaint_mask(None, image.size), "img2img")
    raise _maskless_refusal(request)


def _maskless_refusal(request: EditRequest) -> InvalidRequest:
    return InvalidRequest("mask=None: this SDXL inpainting backend needs a mask (alpha 0 marks the area to edit); "
                          "send mask-less jobs to a backend that edits without one, or set `maskless: img2img` "
                          "to repaint the whole image (limit: a mask is required here)",
                          field="mask", value=None, limit="a mask is required on this backend",
                          job_id=request.job_id)


def work_units(tier: Tier, work_size: tuple[int, int], n: int) -> float:
    """UNet work of one call in guided-step x megapixel x image units (no CFG halves the UNet batch)."""
    mp = work_size[0] * work_size[1] / px.MEGAPIXEL
    return max(1, tier.steps_run) * mp * n * (1.0 if tier.guided else 0.5)


class SDXLInpaintBackend:
    Settings = Settings
    gpu_bound = True  # one call at a time per backend in the local executor; Ray actors by default

    def __init__(self, name: str = "sdxl", settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings or Settings()
        self.pipeline_calls = 0  # paid operations this object has run
        s = self.settings
        extra_images = s.ip_adapter is not None
        self.capabilities = Capabilities(
            max_images=MAX_IMAGES if extra_images else 1, reference_images=extra_images,
            mask_optional=s.maskless == "img2img" or s.mask_inference is not None, arbitrary_sizes=True,
            max_n=s.max_n, transparent_background=False, input_fidelity=False)

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> SDXLInpaintBackend:
        try:
            parsed = Settings.model_validate(settings)
        except ValidationError as exc:
            from backends.errors import BackendMisconfigured

            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise BackendMisconfigured(f"bad sdxl settings: {problems}", backend=name) from None
        return cls(name, parsed)

    def __repr__(self) -> str:
        return f"SDXLInpaintBackend(name={self.name!r}, model={self.settings.model!r}, device={self.settings.device!r})"

    @property
    def _rate_key(self) -> tuple[str, str, str]:
        s = self.settings
        return (s.model, s.device, s.dtype)

    # ---- estimate: settings and header facts only --------------------------------------------------

    def estimate(self, request: EditRequest) -> CostEstimate:
        s = self.settings
        tier_name, tier = s.tier(request.quality if request.quality in ("low", "medium", "high") else "auto")
        first = request.images[0] if request.images else None
        geom = px.plan_geometry(request.size if _plain_size(request.size) else "auto",
                                first.width if first else 1024, first.height if first else 1024,
                                _target_megapixels(s))
        n = request.n if isinstance(request.n, int) and request.n > 0 else 1
        units = work_units(tier, geom.work_size, n)
        with _rates_lock:
            measured = _rates.get(self._rate_key)
        rate = measured if measured is not None else s.seconds_per_step_mp
        where = "measured in this process" if measured is not None else "configured seconds_per_step_mp"
        seconds = units * rate
        usd = gpu_cost(seconds, s.gpu_cost)
        basis = (f"{n} image(s) x {tier.steps_run} steps ({tier_name}{', CFG' if tier.guided else ''}) at "
                 f"{geom.work_size[0]}x{geom.work_size[1]} = {units:.2f} step-MP x {rate:.4g} s ({where}) = "
                 f"{seconds:.2f} GPU-s x {s.gpu_cost.describe()} = ${usd:.5f}")
        return CostEstimate(usd=usd, basis=basis, seconds=seconds)

    # ---- edit -------------------------------------------------------------------------------------

    def edit(self, request: EditRequest) -> EditResult:
        try:
            return self._edit(request)
        except EditError as exc:
            raise exc.with_context(job_id=request.job_id, backend=self.name) from None

    def _edit(self, request: EditRequest) -> EditResult:
        s = self.settings
        if request.mask is None and s.maskless == "refuse" and s.mask_inference is None:  # say what to do
            raise _maskless_refusal(request)
        check_request(request, self.capabilities, backend=self.name)
        started = time.perf_counter()
        tier_name, tier = s.tier(request.quality)
        image = _open(request.images[0], "image")
        choice = choose_mask(request, s, image)
        masked = time.perf_counter()

        from backends import sdxl_runtime as rt

        loaded = rt.get_pipeline(s)  # loads on first use; its native area sets the default working size
        geom = px.plan_geometry(request.size, image.width, image.height,
                                s.target_megapixels or loaded.native_megapixels)
        canvas, canvas_mask = px.to_canvas(image, choice.mask, geom)
        work_image, work_mask = px.to_working(canvas, canvas_mask, geom)
        references = [_open(img, f"image[{i}]") for i, img in enumerate(request.images[1:], start=1)]
        seed = request.seed if request.seed is not None else secrets.randbits(48)
        strength = min(tier.strength, s.img2img_strength) if choice.source == "img2img" else tier.strength
        kwargs: dict[str, Any] = dict(
            prompt=request.prompt, negative_prompt=s.negative_prompt, image=work_image, mask_image=work_mask,
            width=geom.work_size[0], height=geom.work_size[1], num_inference_steps=tier.steps,
            guidance_scale=tier.guidance_scale, strength=strength, num_images_per_prompt=request.n,
            generator=rt.generators(seed, request.n), output_type="pil")
        if tier.eta is not None:
            kwargs["eta"] = tier.eta
        if references:
            kwargs["ip_adapter_image"] = [references]
        prepared = time.perf_counter()
        with loaded.lock:
            rt.select_lora(loaded, s, tier.use_lora)
            self.pipeline_calls += 1
            loaded.calls += 1
            warm_up = loaded.calls == 1
            with rt.timed(loaded.device) as clock:
                output = rt.run_guarded(
                    lambda: self._call_pipeline(loaded.pipe, kwargs), device=loaded.device,
                    on_oom=lambda: rt.oom_error(request.n, geom.work_size, s, loaded.device))
        gpu_s = clock["seconds"]
        if not warm_up:  # a first call's lazy init / compilation would skew estimates for a long time
            self._record_rate(gpu_s, work_units(tier, geom.work_size, request.n))
        outputs = [px.paste_back(canvas, generated, canvas_mask, _feather(s.feather_px, geom))
                   for generated in output.images]
        encoded = tuple(px.encode(img, request.output_format, request.output_compression) for img in outputs)
        cost = gpu_cost(gpu_s, s.gpu_cost)
        total = time.perf_counter() - started
        log.info("%s: %d image(s) %dx%d (work %dx%d, %s, %d steps) on %s in %.2fs GPU, $%s", self.name, len(encoded),
                 *geom.out_size, *geom.work_size, tier_name, tier.steps_run, loaded.device, gpu_s, cost)
        return EditResult(
            images=encoded, output_format=request.output_format, width=geom.out_size[0], height=geom.out_size[1],
            backend=self.name, model=s.model, usage=Usage(gpu_seconds=gpu_s), cost_usd=cost,
            timings={"total_s": total, "prepare_s": prepared - started, "mask_s": masked - started, "gpu_s": gpu_s},
            seed=seed,
            quality=tier_name, background="opaque",
            extras={"cost_basis": f"measured {gpu_s:.3f} device-s on {loaded.device} x {s.gpu_cost.describe()}",
                    "mask": choice.source, "steps_run": int(tier.steps * strength), "strength": strength,
                    "work_size": f"{geom.work_size[0]}x{geom.work_size[1]}", "device": loaded.device,
                    "dtype": loaded.dtype, "lora": tier.use_lora, "warm_up": warm_up,
                    **(choice.inferred.details() if choice.inferred else {})},
            artifacts={"mask.png": choice.inferred.mask_png} if choice.inferred else {})

    def _call_pipeline(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """The one place the pipeline runs (a seam for tests that need a failing call)."""
        try:
            return pipe(**kwargs)
        except EditError:
            raise
        except (RuntimeError, MemoryError):
            raise  # run_guarded sorts out-of-memory from the rest
        except Exception as exc:  # diffusers' own argument checks etc.: this backend cannot serve it
            raise BackendUnavailable(f"SDXL pipeline failed: {exc.__class__.__name__}: {exc}") from None

    def _record_rate(self, seconds: float, units: float) -> None:
        if units <= 0 or seconds <= 0:
            return
        per_unit = seconds / units
        with _rates_lock:
            old = _rates.get(self._rate_key)
            _rates[self._rate_key] = per_unit if old is None else (1 - _EMA_WEIGHT) * old + _EMA_WEIGHT * per_unit

    def close(self) -> None:
        """The loaded pipeline is shared by the process and stays loaded (`sdxl_runtime.clear_cache()` frees it)."""


def _target_megapixels(settings: Settings) -> float:
    """Configured, else the loaded model's native area when this process has it, else SDXL's 1.0."""
    if settings.target_megapixels is not None:
        return settings.target_megapixels
    from backends import sdxl_runtime as rt  # light: torch is imported inside its functions only

    loaded = rt.cached(settings)
    return loaded.native_megapixels if loaded is not None else 1.0


def _plain_size(size: Any) -> bool:
    try:
        return size == "auto" or px.parse_size(size) is not None
    except (ValueError, AttributeError):
        return False


def _feather(feather_px: int, geom: px.Geometry) -> int:
    """`feather_px` is for ~1024-px outputs; small outputs get a proportionally smaller ramp."""
    scale = min(1.0, max(geom.out_size) / 1024)
    return max(1, round(feather_px * scale)) if feather_px else 0


def _open(img, field: str) -> Image.Image:
    try:
        return img.open()
    except Exception as exc:  # validated at probe time; a file changed underneath us
        raise InvalidRequest(f"{field}: cannot decode {img.name}: {exc}", field=field, value=img.name) from None
