"""`SDXLInpaintBackend`: self-hosted SDXL inpainting (diffusers `StableDiffusionXLInpaintPipeline`).

Same request and result as the API backend. Inside: OpenAI's mask (alpha 0 = edit) becomes diffusers'
(white = repaint); the model runs at a working size near `target_megapixels`; the result is mapped back to the
output size and pasted onto the original through an inward-feathered mask, so pixels outside the mask are
unchanged; `seed` makes it reproducible; the cost is the measured device-seconds x the configured $/GPU-second.

One pipeline call runs one row per image (prompt, image, mask, a generator seeded seed+k for image k): a job's `n`
images, and with `edit_batch()` several jobs of equal `batch_key()` (the executor groups up to `max_batch`), each
job getting the images its seed gives alone (up to float rounding) and its n-proportional share of the GPU-seconds.

Settings and tiers: `sdxl_settings`. Estimates and which jobs share a call: `sdxl_planning`. Which pixels to
repaint: `sdxl_masks`. Pixels: `canvas`. torch side: `runtime` and `calls` (shared by every diffusion family) and
`sdxl_loading` (the pipeline class, LoRA, IP-Adapter).
Building the backend, its capabilities and `estimate()` never load the model or import torch.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from backends import canvas as px
from backends import live
from backends.base import MAX_IMAGES, Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.diffusion import sdxl_planning as plan
from backends.diffusion import speeds
from backends.diffusion.calls import call_pipeline, log_done, metered_call
from backends.diffusion.inputs import feather_at, open_input
from backends.diffusion.sdxl_loading import select_lora
from backends.diffusion.sdxl_masks import MaskChoice, choose_mask, maskless_refusal
from backends.diffusion.sdxl_settings import DEFAULT_MODEL, TIERS, Settings, Tier
from backends.errors import BackendUnavailable, EditError
from backends.pricing import gpu_cost
from backends.registry import parse_settings
from backends.validation import check_request

__all__ = ["DEFAULT_MODEL", "TIERS", "SDXLInpaintBackend", "Settings", "Tier", "choose_mask"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    """One request on its way through a (possibly shared) pipeline call."""

    index: int  # position in the caller's list
    request: EditRequest
    tier_name: str
    tier: Tier
    image: Image.Image
    choice: MaskChoice
    strength: float
    seed: int
    started: float
    mask_s: float
    prepare_s: float = 0.0
    geom: px.Geometry | None = None
    canvas: Any = None
    canvas_mask: Any = None
    work_image: Any = None
    work_mask: Any = None
    references: list[Image.Image] = field(default_factory=list)
    call_key: Hashable = None


class SDXLInpaintBackend:
    Settings = Settings
    gpu_bound = True  # pipeline calls one at a time (the device lock); Ray actors by default
    host_workers = 2  # local executor threads: one in the pipeline call, one pasting back / encoding the last one

    def __init__(self, name: str = "sdxl", settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings or Settings()
        self.pipeline_calls = 0  # paid operations this object has run
        s = self.settings
        extra_images = s.ip_adapter is not None
        self.capabilities = Capabilities(
            max_images=MAX_IMAGES if extra_images else 1,
            reference_images=extra_images,
            mask_optional=s.maskless == "img2img" or s.mask_inference is not None,
            arbitrary_sizes=True,
            max_n=s.max_n,
            transparent_background=False,
            input_fidelity=False,
            streaming=True,  # partial images decoded from intermediate latents (step_previews)
        )

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> SDXLInpaintBackend:
        return cls(name, parse_settings(Settings, settings, backend=name, kind="sdxl"))

    def __repr__(self) -> str:
        return f"SDXLInpaintBackend(name={self.name!r}, model={self.settings.model!r}, device={self.settings.device!r})"

    @property
    def _rate_key(self) -> tuple:
        return plan.rate_key(self.settings)

    # ---- estimate: settings and header facts only --------------------------------------------------

    def estimate(self, request: EditRequest) -> CostEstimate:
        return plan.estimate(self.settings, request)

    # ---- batching: which jobs can share one pipeline call --------------------------------------------

    @property
    def max_batch(self) -> int:
        """How many jobs an executor should group into one `edit_batch()` call (the `max_batch` setting)."""
        return self.settings.max_batch

    def batch_key(self, request: EditRequest) -> Hashable | None:
        """Jobs with equal keys can share one pipeline call (`sdxl_planning.batch_key` says which); None: run this
        job alone. Never loads the model."""
        return plan.batch_key(self.settings, request)

    def load(self) -> None:
        """Load the pipeline now (Ray actors call it at start so the first job is not a cold start)."""
        from backends.diffusion import runtime as rt

        rt.get_pipeline(self.settings)

    # ---- edit -------------------------------------------------------------------------------------

    def edit(self, request: EditRequest) -> EditResult:
        (outcome,) = self._edit_all([request], raise_errors=True)
        assert isinstance(outcome, EditResult)
        return outcome

    def edit_batch(self, requests: Sequence[EditRequest]) -> list[EditResult | EditError]:
        """Many jobs in one pipeline call where they fit one (`batch_key`); result i is for request i, each with
        its share of the measured GPU-seconds and its cost. Each job's images are the ones `edit()` gives for
        its seed alone. A bad job gets its own error; a failed shared call is retried job by job."""
        return self._edit_all(list(requests), raise_errors=False)

    def _edit_all(self, requests: list[EditRequest], *, raise_errors: bool) -> list[EditResult | EditError]:
        out: list[EditResult | EditError | None] = [None] * len(requests)

        def failed(index: int, exc: Exception) -> None:
            """Job `index` gets its own error (raised by `edit()`); what is not an EditError is a bug for edit()
            to raise, and one job's outage in a batch."""
            if raise_errors:
                if isinstance(exc, EditError):
                    raise exc.with_context(job_id=requests[index].job_id, backend=self.name) from None
                raise exc
            err = (
                copy.copy(exc)
                if isinstance(exc, EditError)
                else BackendUnavailable(f"SDXL backend failed: {exc.__class__.__name__}: {exc}")
            )
            err.job_id = None  # a copy per job: one shared error (e.g. the model failed to load) names each job
            out[index] = err.with_context(job_id=requests[index].job_id, backend=self.name)

        jobs: list[_Job] = []
        for i, request in enumerate(requests):
            try:
                jobs.append(self._validate(i, request))
            except Exception as exc:
                failed(i, exc)
        if jobs:
            from backends.diffusion import runtime as rt

            try:
                loaded = rt.get_pipeline(self.settings)  # loads on first use; its native area sets the working size
            except Exception as exc:
                for job in jobs:
                    failed(job.index, exc)
                return out  # type: ignore[return-value]
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                try:
                    self._place(job, loaded)
                except Exception as exc:
                    failed(job.index, exc)
                    continue
                groups.setdefault(job.call_key, []).append(job)
            for group in groups.values():
                for job, outcome in self._run_group(group, loaded, raise_errors=raise_errors):
                    out[job.index] = outcome
        return out  # type: ignore[return-value]  # every slot is filled

    def _validate(self, index: int, request: EditRequest) -> _Job:
        """Checks that need no model: refused here, nothing has run."""
        s = self.settings
        if request.mask is None and s.maskless == "refuse" and s.mask_inference is None:  # say what to do
            raise maskless_refusal(request)
        check_request(request, self.capabilities, backend=self.name)
        started = time.perf_counter()
        tier_name, tier = s.tier(request.quality)
        image = open_input(request.images[0], "image")
        choice = choose_mask(request, s, image)
        strength = min(tier.strength, s.img2img_strength) if choice.source == "img2img" else tier.strength
        return _Job(
            index=index,
            request=request,
            tier_name=tier_name,
            tier=tier,
            image=image,
            choice=choice,
            strength=strength,
            seed=request.seed if request.seed is not None else secrets.randbits(48),
            started=started,
            mask_s=time.perf_counter() - started,
        )

    def _place(self, job: _Job, loaded: Any) -> None:
        s, request = self.settings, job.request
        job.geom = geom = px.plan_geometry(
            request.size, job.image.width, job.image.height, s.target_megapixels or loaded.native_megapixels
        )
        job.canvas, job.canvas_mask = px.to_canvas(job.image, job.choice.mask, geom)
        job.work_image, job.work_mask = px.to_working(job.canvas, job.canvas_mask, geom)
        job.references = [open_input(img, f"image[{i}]") for i, img in enumerate(request.images[1:], start=1)]
        # a job with references runs alone (the IP-Adapter's image embeddings are per call)
        job.call_key = (geom.work_size, job.tier_name, job.strength) if not job.references else ("alone", job.index)
        job.prepare_s = time.perf_counter() - job.started

    def _run_group(self, group: list[_Job], loaded: Any, *, raise_errors: bool) -> list[tuple[_Job, Any]]:
        """One pipeline call for the group; if it fails and holds several jobs, each job runs alone."""
        try:
            outputs, gpu_s, warm_up = self._call(group, loaded)
        except Exception as exc:
            if len(group) > 1:
                log.warning(
                    "%s: batched call of %d jobs failed (%s); running them one by one", self.name, len(group), exc
                )
                return [pair for job in group for pair in self._run_group([job], loaded, raise_errors=raise_errors)]
            job = group[0]
            err = exc if isinstance(exc, EditError) else None
            if err is None:
                if raise_errors:
                    raise
                err = BackendUnavailable(f"SDXL pipeline failed: {exc.__class__.__name__}: {exc}")
            err = err.with_context(job_id=job.request.job_id, backend=self.name)
            if raise_errors:
                raise err from None
            return [(job, err)]
        images = sum(j.request.n for j in group)
        results: list[tuple[_Job, Any]] = []
        start = 0
        for job in group:
            mine = outputs[start : start + job.request.n]
            start += job.request.n
            share = gpu_s * job.request.n / images
            try:
                results.append((job, self._finish(job, mine, share, loaded, warm_up, len(group))))
            except Exception as exc:  # after the call: the group's other results stand, this job's share was spent
                if raise_errors:
                    if isinstance(exc, EditError):
                        raise exc.with_context(job_id=job.request.job_id, backend=self.name) from None
                    raise
                if isinstance(exc, EditError):
                    err = exc
                else:
                    err = BackendUnavailable(f"SDXL paste-back failed: {type(exc).__name__}: {exc}")
                err.spent_usd = gpu_cost(share, self.settings.gpu_cost)
                results.append((job, err.with_context(job_id=job.request.job_id, backend=self.name)))
        return results

    def _call(self, group: list[_Job], loaded: Any) -> tuple[list[Any], float, bool]:
        """The pipeline call: one row per image (prompt, image, mask and a generator seeded seed+k for image k), so
        a job's images do not depend on what else is in the call."""
        from backends.diffusion import runtime as rt

        s, first = self.settings, group[0]
        tier, geom = first.tier, first.geom
        kwargs: dict[str, Any] = dict(
            negative_prompt=s.negative_prompt,
            width=geom.work_size[0],
            height=geom.work_size[1],
            num_inference_steps=tier.steps,
            guidance_scale=tier.guidance_scale,
            strength=first.strength,
            output_type="pil",
        )
        rows = [(j, k) for j in group for k in range(j.request.n)]
        kwargs.update(
            prompt=[j.request.prompt for j, _ in rows],
            image=[j.work_image for j, _ in rows],
            mask_image=[j.work_mask for j, _ in rows],
            num_images_per_prompt=1,
            generator=[g for j in group for g in rt.generators(j.seed, j.request.n)],
        )
        ip_scale = None
        if s.ip_adapter is not None:  # a loaded IP-Adapter needs image embeddings on every call
            # references (a job with them runs alone, see _place) at the configured scale; else scale 0: no effect
            kwargs["ip_adapter_image"] = [first.references or [first.work_image]]
            ip_scale = s.ip_adapter.scale if first.references else 0.0
        if tier.eta is not None:
            kwargs["eta"] = tier.eta
        hook = self._previews(group)
        if hook is not None:
            kwargs.update(hook.call_kwargs())
        n_images = sum(j.request.n for j in group)

        def before() -> None:
            select_lora(loaded, s, tier.use_lora)
            if ip_scale is not None:
                loaded.pipe.set_ip_adapter_scale(ip_scale)
            self.pipeline_calls += 1

        output, gpu_s, warm_up = metered_call(
            loaded,
            lambda: rt.run_guarded(
                lambda: self._call_pipeline(loaded.pipe, kwargs),
                device=loaded.device,
                on_oom=lambda: rt.oom_error(n_images, geom.work_size, s, loaded.device),
            ),
            before,
        )
        if hook is not None and hook.interrupted:  # the streaming client left: stopped, billed what it ran
            err = BackendUnavailable(f"stopped: the client went away ({gpu_s:.2f} GPU-s spent)")
            err.spent_usd = gpu_cost(gpu_s, s.gpu_cost)  # type: ignore[attr-defined]
            raise err
        if not warm_up:  # a first call's lazy init / compilation would skew estimates for a long time
            speeds.record(self._rate_key, gpu_s, plan.work_units(tier, geom.work_size, n_images))
        return list(output.images), gpu_s, warm_up

    def _finish(
        self, job: _Job, generated: list[Any], gpu_s: float, loaded: Any, warm_up: bool, batch_jobs: int
    ) -> EditResult:
        s, request, geom, tier = self.settings, job.request, job.geom, job.tier
        outputs = [
            px.paste_back(job.canvas, img, job.canvas_mask, feather_at(s.feather_px, geom.out_size))
            for img in generated
        ]
        encoded = tuple(px.encode(img, request.output_format, request.output_compression) for img in outputs)
        cost = gpu_cost(gpu_s, s.gpu_cost)
        total = time.perf_counter() - job.started
        log_done(log, self.name, len(encoded), geom, job.tier_name, tier.steps_run, loaded.device, gpu_s, cost)
        shared = f" (its {request.n}-image share of a {batch_jobs}-job call)" if batch_jobs > 1 else ""
        choice = job.choice
        return EditResult(
            images=encoded,
            output_format=request.output_format,
            width=geom.out_size[0],
            height=geom.out_size[1],
            backend=self.name,
            model=s.model,
            usage=Usage(gpu_seconds=gpu_s),
            cost_usd=cost,
            timings={"total_s": total, "prepare_s": job.prepare_s, "mask_s": job.mask_s, "gpu_s": gpu_s},
            seed=job.seed,
            quality=job.tier_name,
            background="opaque",
            extras={
                "cost_basis": f"measured {gpu_s:.3f} device-s{shared} on {loaded.device} x {s.gpu_cost.describe()}",
                "mask": choice.source,
                "steps_run": int(tier.steps * job.strength),
                "strength": job.strength,
                "work_size": f"{geom.work_size[0]}x{geom.work_size[1]}",
                "device": loaded.device,
                "dtype": loaded.dtype,
                "lora": tier.use_lora,
                "warm_up": warm_up,
                "batch_jobs": batch_jobs,
                **(choice.inferred.details() if choice.inferred else {}),
            },
            artifacts={"mask.png": choice.inferred.mask_png} if choice.inferred else {},
        )

    def _previews(self, group: list[_Job]) -> Any:
        """Partial images for a streamed job (it runs alone, `batch_key`), pasted back as its final image is."""
        from backends.diffusion.step_previews import StepPreviews

        job = group[0] if len(group) == 1 else None
        channel = live.channel_for(job.request.job_id) if job is not None else None
        if job is None or channel is None:
            return None
        request, feather = job.request, feather_at(self.settings.feather_px, job.geom.out_size)

        def deliver(image: Any) -> None:
            pasted = px.paste_back(job.canvas, image, job.canvas_mask, feather)
            channel.send(px.encode(pasted, request.output_format, request.output_compression))

        return StepPreviews({0: (request.partial_images or 0, deliver)}, stop=lambda: channel.cancelled)

    def _call_pipeline(self, pipe: Any, kwargs: dict[str, Any]) -> Any:
        """The one place the pipeline runs (a seam for tests that need a failing call)."""
        return call_pipeline(pipe, kwargs, "SDXL")

    def close(self) -> None:
        """The loaded pipeline is shared by the process and stays loaded (`runtime.clear_cache()` frees it)."""
