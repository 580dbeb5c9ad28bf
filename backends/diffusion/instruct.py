"""`InstructEditBackend`: what the instruction-editing families (Qwen-Image-Edit, FLUX.2 klein) share: an edit
from a prompt and 1..N input images, with or without a mask, on the shared diffusion runtime.

Same request and result as every backend (OpenAI's edit semantics):
  * no mask: the model edits the whole picture as the prompt says; every input image is given to the model (the
    first is the one being edited, the others are references, "Picture 2" etc. in Qwen's prompt template).
  * a mask (alpha 0 = edit): the model edits the first image placed on the output canvas, and the result is pasted
    back through the inward-feathered mask (`canvas.paste_back`), so every pixel outside the mask keeps the input's
    exact value. A mask with nothing to edit is refused before any GPU time; an all-transparent mask is a
    whole-image edit.
  * size: `canvas.output_size` (THE SIZE RULE: `auto` = the first input's own size). The model runs at a working
    size of the output's aspect ratio, ~`target_megapixels` x 1024^2 px on the family's grid, and its images are
    resized to the output size. height/width are always passed (Qwen would otherwise pick ~1 MP at the LAST
    image's aspect, klein the first reference's size).
  * seed: image k of a job uses a CPU generator seeded seed+k: the same bytes on every run and device type.
  * cost: the measured device-seconds of the pipeline call x the configured $/GPU-second; estimates use the speed
    the settings' card has (`speeds.py`), and say which.
  * out of GPU memory: `BackendUnavailable` with advice (fewer images, offload, fp8, smaller working size).

A family module subclasses it with its `Settings` and `pipeline_kwargs()`; `condition_megapixels()` says how much
each input image costs the transformer. torch and diffusers load only when a job runs.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from backends import canvas as px
from backends.base import Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.diffusion import speeds
from backends.diffusion.adapters import select_lora
from backends.diffusion.calls import call_pipeline, log_done, metered_call
from backends.diffusion.inputs import feather_at, given_mask, open_input
from backends.diffusion.instruct_settings import InstructSettings, Tier
from backends.errors import BackendUnavailable, EditError
from backends.pricing import gpu_cost
from backends.registry import parse_settings
from backends.validation import check_request

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    request: EditRequest
    tier_name: str
    tier: Tier
    seed: int
    started: float
    images: list[Image.Image]  # RGB, as the model gets them (first: the canvas at working size when masked)
    geom: px.Geometry
    mask_source: str  # "none" | "given" | "whole image" (an all-transparent mask)
    canvas: Image.Image | None = None  # output-size original to paste onto (masked edits)
    canvas_mask: Image.Image | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    prepare_s: float = 0.0


class InstructEditBackend:
    Settings: ClassVar[type[InstructSettings]]
    kind: ClassVar[str]  # the policy's `kind:`
    gpu_bound = True  # the local executor runs its calls one at a time per GPU (the device lock does)
    # Two threads per backend in the local executor: the device lock lets one into the pipeline call while the
    # other prepares its inputs or pastes back and encodes the previous job's images (CPU work the GPU need not wait
    # for).
    host_workers = 2

    def __init__(self, name: str | None = None, settings: InstructSettings | None = None) -> None:
        self.name = name or self.kind
        self.settings = settings or self.Settings()  # type: ignore[call-arg]
        self.pipeline_calls = 0
        s = self.settings
        max_images = s.max_images or s.images_limit()  # Qwen's limit reads the checkpoint's model_index.json
        self.capabilities = Capabilities(
            max_images=max_images,
            reference_images=max_images > 1,
            mask_optional=True,
            arbitrary_sizes=True,
            max_n=s.max_n,
            transparent_background=False,
            # inputs are always VAE-encoded at up to ~1 MP: "high" fidelity is what these models do; "low" is taken
            # too (there is no cheaper mode to switch to)
            input_fidelity=True,
            mask_mode="paste_back",
        )

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]):
        return cls(name, parse_settings(cls.Settings, settings, backend=name, kind=cls.kind))

    def __repr__(self) -> str:
        s = self.settings
        return f"{type(self).__name__}(name={self.name!r}, model={s.model!r}, device={s.device!r})"

    # ---- what a family provides ------------------------------------------------------------------------

    def pipeline_kwargs(self, job: _Job, loaded: Any) -> dict[str, Any]:
        """The family's call arguments besides image, prompt, size, steps, generator and count."""
        raise NotImplementedError

    def condition_megapixels(self, size: tuple[int, int]) -> float:
        """How many MP of image tokens one input image of this size adds to every transformer pass."""
        raise NotImplementedError

    def guided(self, tier: Tier) -> bool:
        return tier.guided

    def prepare_inputs(self, images: list[Image.Image], request: EditRequest) -> list[Image.Image]:
        """Last local checks and fixes of the model's input images (klein: >= 64 px a side)."""
        return images

    # ---- estimate: settings and header facts only ----------------------------------------------------

    @property
    def _rate_key(self) -> tuple:
        s = self.settings
        return (self.kind, s.model, s.device, s.dtype, s.fp8, s.compile, s.first_block_cache)

    def work_units(self, tier: Tier, work_size: tuple[int, int], inputs: list[tuple[int, int]], n: int) -> float:
        """Transformer passes x MP of image tokens per pass (output + every input), for `n` images."""
        out_mp = work_size[0] * work_size[1] / px.MEGAPIXEL
        tokens_mp = out_mp + sum(self.condition_megapixels(size) for size in inputs)
        return tier.steps_run * (2 if self.guided(tier) else 1) * tokens_mp * n

    def estimate(self, request: EditRequest) -> CostEstimate:
        s = self.settings
        tier_name, tier = s.tier(request.quality if request.quality in ("low", "medium", "high") else "auto")
        sizes = [(img.width, img.height) for img in request.images] or [(1024, 1024)]
        try:
            out = px.output_size(request.size, sizes[0])
        except (ValueError, AttributeError):
            out = sizes[0]
        work = px.working_size(*out, s.target_megapixels or 1.0, s.grid)
        n = request.n if isinstance(request.n, int) and request.n > 0 else 1
        speed = speeds.speed_for(self.Settings.speed_family, s, self._rate_key)
        units = self.work_units(tier, work, sizes, n) + speed.fixed_units * n
        seconds = units * speed.seconds
        usd = gpu_cost(seconds, s.gpu_cost)
        passes = 2 if self.guided(tier) else 1
        basis = (
            f"{n} image(s) x {tier.steps_run} steps x {passes} pass(es) ({tier_name}) over {work[0]}x{work[1]} + "
            f"{len(sizes)} input(s) = {units:.2f} pass-MP x {speed.label} = {seconds:.2f} GPU-s x "
            f"{s.gpu_cost.describe()} = ${usd:.5f}"
        )
        return CostEstimate(usd=usd, basis=basis, seconds=seconds)

    def load(self) -> None:
        """Load the pipeline now (Ray actors call it at start so the first job is not a cold start)."""
        from backends.diffusion import runtime as rt

        rt.get_pipeline(self.settings)

    # ---- edit ---------------------------------------------------------------------------------------------

    def edit(self, request: EditRequest) -> EditResult:
        try:
            job = self._prepare(request)  # every local check: nothing has run on the GPU yet
            from backends.diffusion import runtime as rt

            loaded = rt.get_pipeline(self.settings)
            generated, gpu_s, warm_up = self._call(job, loaded)
            return self._finish(job, generated, gpu_s, loaded, warm_up)
        except EditError as exc:
            raise exc.with_context(job_id=request.job_id, backend=self.name) from None

    def _prepare(self, request: EditRequest) -> _Job:
        s = self.settings
        check_request(request, self.capabilities, backend=self.name)
        started = time.perf_counter()
        tier_name, tier = s.tier(request.quality)
        many = len(request.images) > 1
        images = [open_input(img, f"image[{i}]" if many else "image") for i, img in enumerate(request.images)]
        first = images[0]
        geom = px.plan_geometry(request.size, first.width, first.height, s.target_megapixels or 1.0, s.grid)
        job = _Job(
            request=request,
            tier_name=tier_name,
            tier=tier,
            seed=request.seed if request.seed is not None else secrets.randbits(48),
            started=started,
            images=images,
            geom=geom,
            mask_source="none",
        )
        if request.mask is not None:
            repaint, area = given_mask(request, first.size)
            if area < 1.0:
                job.mask_source = "given"
                job.canvas, job.canvas_mask = px.to_canvas(first, repaint, geom)
                # the model edits the canvas at its working size, so its output lines up with the paste-back
                images[0] = job.canvas.resize(geom.work_size, Image.Resampling.LANCZOS)
            else:
                job.mask_source = "whole image"  # all transparent: everything may change
        job.images = self.prepare_inputs([img.convert("RGB") for img in images], request)
        job.prepare_s = time.perf_counter() - started
        return job

    def _call(self, job: _Job, loaded: Any) -> tuple[list[Image.Image], float, bool]:
        from backends.diffusion import runtime as rt

        s, request, tier = self.settings, job.request, job.tier
        work_w, work_h = job.geom.work_size
        kwargs: dict[str, Any] = {
            "image": job.images,
            "prompt": request.prompt,
            "height": work_h,
            "width": work_w,
            "num_inference_steps": tier.steps,
            "num_images_per_prompt": request.n,
            "generator": rt.generators(job.seed, request.n),
            "output_type": "pil",
            **self.pipeline_kwargs(job, loaded),
        }

        def before() -> None:
            select_lora(loaded, s.lora, tier.use_lora)
            self.pipeline_calls += 1

        def run() -> Any:
            try:
                return rt.run_guarded(
                    lambda: self._call_pipeline(loaded.pipe, kwargs),
                    device=loaded.device,
                    on_oom=lambda: rt.oom_error(request.n, job.geom.work_size, s, loaded.device),
                )
            except EditError:
                raise
            except Exception as exc:  # a kernel or an option this machine cannot run: an outage, not a bug
                what = s.family.name
                raise BackendUnavailable(f"{what} pipeline failed: {type(exc).__name__}: {exc}") from None

        output, gpu_s, warm_up = metered_call(loaded, run, before)
        if not warm_up:  # a first call's lazy init / compilation would skew estimates for a long time
            sizes = [img.size for img in job.images]
            speeds.record(self._rate_key, gpu_s, self.work_units(tier, job.geom.work_size, sizes, request.n))
        return list(output.images), gpu_s, warm_up

    def _call_pipeline(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """The one place the pipeline runs (a seam for tests that need a failing call)."""
        return call_pipeline(pipe, kwargs, self.settings.family.name)

    def _finish(self, job: _Job, generated: list[Image.Image], gpu_s: float, loaded: Any, warm_up: bool) -> EditResult:
        """Paste-back and encoding: CPU work outside the device lock (another job's pipeline call may run)."""
        s, request, geom = self.settings, job.request, job.geom
        post_start = time.perf_counter()
        outputs = []
        for img in generated:
            if img.size != geom.out_size:
                img = img.resize(geom.out_size, Image.Resampling.LANCZOS)
            if job.canvas is not None and job.canvas_mask is not None:
                img = px.paste_back(job.canvas, img, job.canvas_mask, feather_at(s.feather_px, geom.out_size))
            outputs.append(img)
        encoded = tuple(px.encode(img, request.output_format, request.output_compression) for img in outputs)
        post_s = time.perf_counter() - post_start
        cost = gpu_cost(gpu_s, s.gpu_cost)
        log_done(log, self.name, len(encoded), geom, job.tier_name, job.tier.steps_run, loaded.device, gpu_s, cost)
        return EditResult(
            images=encoded,
            output_format=request.output_format,
            width=geom.out_size[0],
            height=geom.out_size[1],
            backend=self.name,
            model=s.model,
            usage=Usage(gpu_seconds=gpu_s),
            cost_usd=cost,
            timings={
                "total_s": time.perf_counter() - job.started,
                "prepare_s": job.prepare_s,
                "gpu_s": gpu_s,
                "postprocess_s": post_s,
            },
            seed=job.seed,
            quality=job.tier_name,
            background="opaque",
            extras={
                "cost_basis": f"measured {gpu_s:.3f} device-s on {loaded.device} x {s.gpu_cost.describe()}",
                "mask": job.mask_source,
                "steps_run": job.tier.steps_run,
                "guidance_scale": job.tier.guidance_scale,
                "work_size": f"{geom.work_size[0]}x{geom.work_size[1]}",
                "inputs": len(job.images),
                "pipeline": type(loaded.pipe).__name__,
                "device": loaded.device,
                "dtype": loaded.dtype,
                "lora": job.tier.use_lora,
                "warm_up": warm_up,
                **job.notes,
            },
        )

    def close(self) -> None:
        """The loaded pipeline is shared by the process and stays loaded (`runtime.clear_cache()` frees it)."""
