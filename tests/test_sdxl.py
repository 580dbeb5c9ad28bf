"""The SDXL inpainting backend on the tiny random-weight stand-in pipeline (CPU, no network).

The stand-in is loaded through the same `from_pretrained` path as the real checkpoint; its outputs are noise,
which is what makes "the masked area changed, the rest did not" checkable.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends.base import EditRequest
from backends.diffusion import SDXLInpaintBackend
from backends.diffusion import runtime as rt
from backends.errors import BackendMisconfigured, BackendUnavailable, InvalidRequest
from backends.images import InputImage
from backends.pricing import gpu_cost
from backends.registry import create_backend
from tests.backend_contract import BackendContract, make_request
from tests.fixtures_sdxl import tiny_settings
from tests.imagery import gradient, image_bytes, mask_bytes

REPO = Path(__file__).resolve().parents[1]


def _backend(model_dir, name="sdxl", **overrides) -> SDXLInpaintBackend:
    return SDXLInpaintBackend.from_settings(name, tiny_settings(model_dir, **overrides))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir) -> SDXLInpaintBackend:
    return _backend(tiny_sdxl_dir)


class TestSDXLContract(BackendContract):
    @pytest.fixture
    def backend(self, sdxl):
        return sdxl

    @pytest.fixture
    def paid_calls(self, sdxl):
        return lambda: sdxl.pipeline_calls


def test_same_seed_gives_identical_bytes_and_another_seed_differs(sdxl, tiny_sdxl_dir):
    first = sdxl.edit(make_request(n=2, seed=7))
    again = _backend(tiny_sdxl_dir, name="other").edit(make_request(n=2, seed=7))
    assert first.images == again.images and first.seed == 7
    assert sdxl.edit(make_request(n=2, seed=8)).images != first.images
    assert first.images[0] != first.images[1]  # n variants, not n copies


def test_unseeded_result_reports_the_seed_that_reproduces_it(sdxl):
    result = sdxl.edit(make_request())
    assert result.seed is not None
    assert sdxl.edit(make_request(seed=result.seed)).images == result.images


def test_only_the_transparent_area_changes(sdxl):
    box = (8, 8, 32, 24)  # asymmetric: an inverted mask would change the other 92% of the picture
    req = EditRequest(
        prompt="lower",
        images=(InputImage.from_bytes(image_bytes(64, 64), "in.png"),),
        mask=InputImage.from_bytes(mask_bytes(64, 64, box), "m.png", field="mask"),
        seed=1,
        job_id="mask-test",
    )
    out = _pixels(sdxl.edit(req).images[0])
    original = np.asarray(gradient(64, 64)).astype(int)
    inside = np.zeros((64, 64), bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    assert np.array_equal(out[~inside], original[~inside])  # exact: PNG, integer paste-back
    assert np.abs(out[inside] - original[inside]).mean() > 10  # the edit happened where alpha was 0


def test_n_images_come_from_one_pipeline_call(sdxl):
    before = sdxl.pipeline_calls
    result = sdxl.edit(make_request(n=3, seed=2))
    assert sdxl.pipeline_calls == before + 1
    assert len(result.images) == 3 and len(set(result.images)) == 3


def test_backends_with_the_same_model_share_one_loaded_pipeline(tiny_sdxl_dir):
    rt.clear_cache()
    loads = rt.loads
    a, b = _backend(tiny_sdxl_dir, name="a"), _backend(tiny_sdxl_dir, name="b")
    a.edit(make_request(seed=1))
    b.edit(make_request(seed=1))
    assert rt.loads == loads + 1


def test_concurrent_edits_are_serialised_and_reproducible(sdxl):
    expected = sdxl.edit(make_request(seed=5)).images
    results: list[tuple[bytes, ...]] = []
    threads = [
        threading.Thread(target=lambda: results.append(sdxl.edit(make_request(seed=5)).images)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_auto_size_keeps_the_input_size_and_aspect(sdxl):
    req = EditRequest(
        prompt="wider",
        images=(InputImage.from_bytes(image_bytes(96, 64), "in.png"),),
        mask=InputImage.from_bytes(mask_bytes(96, 64), "m.png", field="mask"),
        seed=3,
    )
    result = sdxl.edit(req)
    assert (result.width, result.height) == (96, 64)
    w, h = (int(v) for v in result.extras["work_size"].split("x"))
    assert w % 8 == 0 and h % 8 == 0 and abs(w / h - 1.5) < 0.1


def test_default_working_area_is_the_models_native_one(tiny_sdxl_dir):
    settings = tiny_settings(tiny_sdxl_dir)
    del settings["target_megapixels"]
    backend = SDXLInpaintBackend.from_settings("native", settings)
    result = backend.edit(make_request(seed=1))
    assert result.extras["work_size"] == "64x64"  # the stand-in UNet's sample_size x VAE factor, not 1024x1024


def test_fixed_size_letterboxes_and_outpaints(sdxl):
    result = sdxl.edit(make_request(size="1536x1024", seed=4))
    assert (result.width, result.height) == (1536, 1024)
    out = _pixels(result.images[0])
    assert Image.open(io.BytesIO(result.images[0])).size == (1536, 1024)
    assert out[:, :200].std() > 0  # the side bars were repainted, not left flat grey


def test_maskless_request_is_refused_with_advice_by_default(sdxl):
    before = sdxl.pipeline_calls
    assert not sdxl.capabilities.mask_optional
    with pytest.raises(InvalidRequest) as info:
        sdxl.edit(make_request(mask=False))
    assert info.value.field == "mask" and "maskless: img2img" in str(info.value)
    assert "contract-job" in str(info.value) and sdxl.pipeline_calls == before


def test_maskless_img2img_repaints_the_whole_image(tiny_sdxl_dir):
    backend = _backend(tiny_sdxl_dir, maskless="img2img")
    assert backend.capabilities.mask_optional
    result = backend.edit(make_request(mask=False, seed=1))
    changed = np.abs(_pixels(result.images[0]) - np.asarray(gradient(64, 64)).astype(int)).sum(axis=2) > 0
    assert changed.mean() > 0.9
    assert result.extras["mask"] == "img2img" and result.extras["strength"] == 0.75


def test_cost_is_measured_seconds_times_the_configured_rate(tiny_sdxl_dir, monkeypatch):
    # The measured-rate table is per process and keyed by (model, device, dtype): other tests on the same tiny
    # model fill it, so start this one from an empty table whatever ran before.
    from backends.diffusion import speeds

    monkeypatch.setattr(speeds, "_measured", {})
    monkeypatch.setattr(rt, "_cache", {})  # and from a freshly loaded pipeline, whatever loaded one before
    backend = _backend(tiny_sdxl_dir, dtype="fp32", gpu_cost={"hourly_usd": "3.60"})
    assert "on A100-80GB (published" in backend.estimate(make_request()).basis  # no card named: the A100's
    assert backend.edit(make_request(n=2)).extras["warm_up"]  # a fresh pipeline's first call: not a rate sample
    assert "on A100-80GB (published" in backend.estimate(make_request()).basis
    result = backend.edit(make_request(n=2))
    assert result.usage.gpu_seconds > 0
    assert result.cost_usd == gpu_cost(result.usage.gpu_seconds, backend.settings.gpu_cost) > 0
    assert result.cost_usd == Decimal(str(round(result.usage.gpu_seconds, 6))) * Decimal("0.001")
    after = backend.estimate(make_request(n=2))
    assert "measured in this process" in after.basis
    assert after.seconds == pytest.approx(result.usage.gpu_seconds, rel=0.01)


def test_quality_tiers_and_policy_overrides(tiny_sdxl_dir):
    backend = _backend(tiny_sdxl_dir, tiers={"high": {"steps": 3}}, auto_quality="high")
    assert backend.settings.tiers["high"].guidance_scale == 8.0  # untouched fields keep their defaults
    result = backend.edit(make_request(quality="auto"))
    assert result.quality == "high" and result.extras["steps_run"] == 2
    est = {q: backend.estimate(make_request(quality=q)).usd for q in ("low", "medium", "high")}
    assert est["low"] < est["medium"] < est["high"]  # low: no CFG; high: more steps


def test_a_tier_given_empty_keeps_its_defaults_and_an_unknown_tier_is_misconfiguration():
    # `tiers: {low: }` in YAML is None: the defaults, as for qwen-edit and flux2-klein (it was a raw TypeError)
    backend = create_backend("sdxl", "s", {"tiers": {"low": None}})
    assert backend.settings.tiers["low"] == SDXLInpaintBackend.Settings().tiers["low"]
    with pytest.raises(BackendMisconfigured, match=r"tiers: .*unknown tier\(s\) \['ultra'\]"):
        create_backend("sdxl", "s", {"tiers": {"ultra": {"steps": 3}}})


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"background": "transparent"}, "background"),
        ({"input_fidelity": "high"}, "input_fidelity"),
        ({"images": 2}, "image"),
    ],
)
def test_what_sdxl_cannot_honour_is_refused_before_the_pipeline(sdxl, bad, field):
    before = sdxl.pipeline_calls
    with pytest.raises(InvalidRequest) as info:
        sdxl.edit(make_request(**bad))
    assert info.value.field == field and sdxl.pipeline_calls == before


def test_out_of_memory_is_unavailable_with_advice_and_the_pipeline_stays_usable(tiny_sdxl_dir):
    import torch

    class OnceOOM(SDXLInpaintBackend):
        failed = False

        def _call_pipeline(self, pipe, kwargs):
            if not self.failed:
                self.failed = True
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super()._call_pipeline(pipe, kwargs)

    backend = OnceOOM("oom", SDXLInpaintBackend.Settings.model_validate(tiny_settings(tiny_sdxl_dir)))
    with pytest.raises(BackendUnavailable) as info:
        backend.edit(make_request(n=4))
    message = str(info.value)
    assert "out of GPU memory" in message and "fewer images" in message and "offload: model" in message
    assert "contract-job" in message and not isinstance(info.value, BackendMisconfigured)
    assert len(backend.edit(make_request(n=1)).images) == 1


def test_missing_model_directory_names_it(tmp_path):
    backend = SDXLInpaintBackend.from_settings("sdxl", {"model": str(tmp_path / "nope"), "device": "cpu"})
    with pytest.raises(BackendMisconfigured) as info:
        backend.edit(make_request())
    assert str(tmp_path / "nope") in str(info.value)


def test_hub_id_without_network_names_the_id_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    backend = SDXLInpaintBackend.from_settings("sdxl", {"model": "someone/sdxl-inpaint-missing", "device": "cpu"})
    with pytest.raises(BackendMisconfigured) as info:
        backend.edit(make_request())
    assert "someone/sdxl-inpaint-missing" in str(info.value) and str(tmp_path / "hub") in str(info.value)


def test_bad_settings_are_misconfiguration():
    with pytest.raises(BackendMisconfigured, match="use_lora"):
        create_backend("sdxl", "fast", {"tiers": {"low": {"use_lora": True}}})
    with pytest.raises(BackendMisconfigured, match="tiers"):
        create_backend("sdxl", "x", {"tiers": {"ultra": {"steps": 3}}})
    with pytest.raises(BackendMisconfigured, match="nonsense"):
        create_backend("sdxl", "x", {"nonsense": 1})
    with pytest.raises(BackendMisconfigured, match="device: .*one of auto, cpu, mps, cuda, cuda:N"):
        create_backend("sdxl", "x", {"device": "tpu"})  # at policy load, not at the first job


def test_planning_needs_no_torch_and_no_model():
    """The router and `editroute plan` build backends on machines with no GPU and no weights."""
    code = (
        "import sys; from backends.registry import create_backend; from tests.backend_contract import make_request;"
        "b = create_backend('sdxl', 's', {'model': 'nowhere/none', 'device': 'cuda:7'});"
        "e = b.estimate(make_request(n=4, quality='high')); assert e.usd > 0 and e.seconds > 0, e;"
        "assert b.capabilities.max_images == 1 and not b.capabilities.transparent_background;"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; assert not bad, bad;"
        "print(e.basis)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "0.11 s on A100-80GB (published: huggingface/diffusion-fast" in out.stdout


def test_ip_adapter_setting_opens_reference_images(tiny_sdxl_dir):
    backend = _backend(tiny_sdxl_dir, ip_adapter={"model": "h94/IP-Adapter"})
    assert backend.capabilities.max_images == 16 and backend.capabilities.reference_images


def test_tiny_speed_benchmark_smoke_runs(tmp_path, tiny_sdxl_dir):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.sdxl_speed",
            "--tiny",
            "--steps",
            "2",
            "-n",
            "2",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "speed.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "EDITROUTE_TINY_SDXL_DIR": str(tiny_sdxl_dir)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| path " in out.stdout and "plain diffusers" in out.stdout and "card:" in out.stdout
    import json

    report = json.loads((tmp_path / "speed.json").read_text())
    assert {r["path"] for r in report["rows"]} >= {"plain diffusers", "editroute"}
    assert all(r["seconds_per_image"] > 0 for r in report["rows"])


def test_tiny_gpu_check_smoke_runs_offline(tmp_path):
    """The GPU check runs unattended with no network (HF_HUB_OFFLINE) and times edit() and edit_batch()."""
    import json
    import os

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--tiny",
            "--steps",
            "2",
            "--tiers",
            "low",
            "--batches",
            "1",
            "--jobs",
            "2",
            "--warmup",
            "0",
            "--json",
            str(tmp_path / "check.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "check.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, "2 jobs"] and all(r["seconds_per_image"] > 0 for r in rows)
    assert "2 jobs in one call" in out.stdout


@pytest.mark.cuda
def test_cuda_fp16_reproducible(tiny_sdxl_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    backend = _backend(tiny_sdxl_dir, device="cuda")
    first = backend.edit(make_request(n=2, seed=11))
    assert first.extras["dtype"] == "fp16" and first.extras["device"].startswith("cuda")
    assert backend.edit(make_request(n=2, seed=11)).images == first.images
