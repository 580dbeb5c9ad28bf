"""Batched SDXL calls on the tiny stand-in: several jobs share one pipeline call (`batch_key` / `edit_batch`), and
each job still gets exactly the images `edit()` gives it alone, its own share of the measured GPU-seconds, and its
own error when it is bad.

"The images `edit()` gives alone" means: the same seeds drive the same rows, so the same picture; bit for bit only
up to float rounding, because a batch's small matmuls round differently (see `same_up_to_rounding`)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backends.base import EditResult
from backends.diffusion import SDXLInpaintBackend
from backends.diffusion import runtime as rt
from backends.diffusion.sdxl_settings import Settings
from backends.errors import BackendUnavailable, InvalidRequest
from backends.pricing import gpu_cost
from tests.backend_contract import make_request
from tests.fixtures_sdxl import tiny_settings


def same_up_to_rounding(a: bytes, b: bytes) -> bool:
    """Equal images, up to float rounding: a batched call's small matmuls (time and pooled-text embeddings, M =
    rows) round differently in the last bit than a lone call's, which can move a pixel by one level."""
    x, y = (np.asarray(Image.open(io.BytesIO(d)).convert("RGB")).astype(int) for d in (a, b))
    diff = np.abs(x - y)
    return x.shape == y.shape and diff.max() <= 2 and (diff > 0).mean() < 0.005


def _backend(model_dir, **overrides) -> SDXLInpaintBackend:
    return SDXLInpaintBackend.from_settings("sdxl", tiny_settings(model_dir, **overrides))


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir) -> SDXLInpaintBackend:
    return _backend(tiny_sdxl_dir)


def test_a_batch_is_one_call_and_each_job_gets_what_it_would_get_alone(sdxl):
    jobs = [
        make_request(n=2, seed=7, prompt="lower", job_id="a"),
        make_request(n=1, seed=9, prompt="wider newer", job_id="b", output_format="jpeg"),
        make_request(n=1, seed=7, prompt="lowest", job_id="c"),
    ]
    alone = [sdxl.edit(r) for r in jobs]
    before = sdxl.pipeline_calls
    batched = sdxl.edit_batch(jobs)
    assert sdxl.pipeline_calls == before + 1
    assert all(isinstance(r, EditResult) for r in batched)
    for got, want in zip(batched, alone, strict=True):
        assert len(got.images) == len(want.images)
        for g, w in zip(got.images, want.images, strict=True):
            assert same_up_to_rounding(g, w)
    # ...and the check above can fail: another seed or another job's row is a different picture
    assert not same_up_to_rounding(batched[0].images[0], batched[0].images[1])
    assert not same_up_to_rounding(batched[0].images[0], batched[2].images[0])
    assert [r.seed for r in batched] == [7, 9, 7] and batched[1].output_format == "jpeg"
    a, b, c = batched
    assert a.extras["batch_jobs"] == 3 and "share of a 3-job call" in a.extras["cost_basis"]
    assert a.usage.gpu_seconds == pytest.approx(2 * b.usage.gpu_seconds) == pytest.approx(2 * c.usage.gpu_seconds)
    assert all(r.cost_usd == gpu_cost(r.usage.gpu_seconds, sdxl.settings.gpu_cost) > 0 for r in batched)


def test_image_k_of_a_job_is_image_0_of_seed_plus_k(sdxl):
    two = sdxl.edit(make_request(n=2, seed=20))
    assert sdxl.edit(make_request(n=1, seed=21)).images[0] == two.images[1]


def test_a_bad_job_gets_its_own_error_and_the_rest_run(sdxl):
    jobs = [
        make_request(seed=1, job_id="ok-1"),
        make_request(n=11, job_id="too-many"),
        make_request(mask=False, job_id="no-mask"),
        make_request(seed=2, job_id="ok-2"),
    ]
    before = sdxl.pipeline_calls
    out = sdxl.edit_batch(jobs)
    assert sdxl.pipeline_calls == before + 1  # the two good ones still share one call
    assert isinstance(out[0], EditResult) and isinstance(out[3], EditResult)
    assert isinstance(out[1], InvalidRequest) and out[1].field == "n" and out[1].job_id == "too-many"
    assert isinstance(out[2], InvalidRequest) and out[2].field == "mask" and out[2].backend == "sdxl"
    assert out[0].extras["batch_jobs"] == 2


def test_a_failed_shared_call_is_retried_job_by_job(tiny_sdxl_dir):
    class Poisoned(SDXLInpaintBackend):
        def _call_pipeline(self, pipe, kwargs):
            prompts = kwargs["prompt"] if isinstance(kwargs["prompt"], list) else [kwargs["prompt"]]
            if "poison" in prompts:
                raise BackendUnavailable("the pipeline choked on this prompt")
            return super()._call_pipeline(pipe, kwargs)

    backend = Poisoned("sdxl", Settings.model_validate(tiny_settings(tiny_sdxl_dir)))
    out = backend.edit_batch(
        [make_request(seed=1, job_id="x"), make_request(prompt="poison", job_id="p"), make_request(seed=3, job_id="y")]
    )
    assert isinstance(out[0], EditResult) and isinstance(out[2], EditResult)
    assert isinstance(out[1], BackendUnavailable) and out[1].job_id == "p"
    assert backend.pipeline_calls == 4  # the shared call, then one per job
    assert same_up_to_rounding(out[0].images[0], backend.edit(make_request(seed=1)).images[0])


def test_a_job_failing_after_the_shared_call_keeps_the_others_and_counts_its_gpu_share(tiny_sdxl_dir):
    class BreaksOnFinish(SDXLInpaintBackend):
        def _finish(self, job, generated, gpu_s, loaded, warm_up, batch_jobs):
            if job.request.job_id == "breaks":
                raise MemoryError("encoding ran out of host memory")
            return super()._finish(job, generated, gpu_s, loaded, warm_up, batch_jobs)

    backend = BreaksOnFinish("sdxl", Settings.model_validate(tiny_settings(tiny_sdxl_dir)))
    out = backend.edit_batch([make_request(seed=1, job_id="x"), make_request(seed=2, job_id="breaks")])
    assert backend.pipeline_calls == 1
    assert isinstance(out[0], EditResult)
    assert isinstance(out[1], BackendUnavailable) and out[1].job_id == "breaks" and "MemoryError" in str(out[1])
    # the call ran: the failed job's share of it (as much as the other job's, one image each) was spent
    assert out[1].spent_usd == out[0].cost_usd > 0


def test_batch_key_groups_what_can_share_a_call(sdxl, tiny_sdxl_dir):
    key = sdxl.batch_key
    base = key(make_request(seed=1))
    assert base is not None and hash(base) is not None
    # per-job things may differ
    assert key(make_request(n=3, seed=5, prompt="other", output_format="webp", output_compression=50)) == base
    # what the shared call depends on may not
    assert key(make_request(quality="high")) != base  # another tier
    assert key(make_request(size="1536x1024")) != base  # another working size
    assert key(make_request(mask=False)) is None  # refused here; edit() says why
    img2img = _backend(tiny_sdxl_dir, maskless="img2img")
    assert img2img.batch_key(make_request(mask=False)) not in (None, img2img.batch_key(make_request()))
    with_refs = _backend(tiny_sdxl_dir, ip_adapter={"model": "h94/IP-Adapter"})
    assert with_refs.batch_key(make_request(images=2)) is None  # reference images run alone


def test_max_batch_defaults_by_device():
    assert Settings(device="cpu").max_batch == 1 and Settings(device="mps").max_batch == 1
    assert Settings(device="cuda").max_batch == 4 and Settings(device="cuda:1").max_batch == 4
    assert Settings(device="cpu", max_batch=3).max_batch == 3
    assert SDXLInpaintBackend.from_settings("s", {"device": "cuda", "max_batch": 8}).max_batch == 8
    with pytest.raises(Exception, match="max_batch"):
        SDXLInpaintBackend.from_settings("s", {"max_batch": 0})


def test_load_loads_the_pipeline_before_the_first_job(tiny_sdxl_dir, monkeypatch):
    backend = _backend(tiny_sdxl_dir)
    monkeypatch.setattr(rt, "_cache", {})  # this process has loaded nothing (others' pipelines stay loaded)
    assert rt.cached(backend.settings) is None
    loads = rt.loads
    backend.load()
    assert rt.cached(backend.settings) is not None and rt.loads == loads + 1
    backend.edit(make_request(seed=1))
    assert rt.loads == loads + 1  # the job used it


def test_a_model_that_cannot_load_fails_each_job_by_name(tmp_path):
    from backends.errors import BackendMisconfigured

    backend = SDXLInpaintBackend.from_settings("sdxl", {"model": str(tmp_path / "gone"), "device": "cpu"})
    out = backend.edit_batch([make_request(job_id="a"), make_request(job_id="b")])
    assert [type(e) for e in out] == [BackendMisconfigured, BackendMisconfigured]
    assert [e.job_id for e in out] == ["a", "b"] and all(str(tmp_path / "gone") in str(e) for e in out)
