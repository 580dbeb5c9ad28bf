"""The instruction-editing backends (`kind: qwen-edit`, `kind: flux2-klein`) end to end on the tiny random-weight
stand-ins: built offline, written with `save_pretrained`, loaded through the same `from_pretrained` path as a hub
checkpoint, run on the CPU. Outputs are noise, which makes "this changed / that did not" checkable.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends.base import EditRequest
from backends.diffusion import Flux2KleinBackend, QwenEditBackend
from backends.diffusion import runtime as rt
from backends.errors import BackendMisconfigured, BackendUnavailable, InvalidRequest
from backends.images import InputImage
from backends.registry import create_backend
from tests.backend_contract import BackendContract, make_request
from tests.fixtures_tiny_diffusion import tiny_instruct_settings
from tests.imagery import encode, gradient, image_bytes, mask_bytes

REPO = Path(__file__).resolve().parents[1]
KINDS = ("qwen-edit", "flux2-klein")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _solid(width: int, height: int, colour=(200, 30, 90)) -> InputImage:
    return InputImage.from_bytes(encode(Image.new("RGB", (width, height), colour)), "solid.png")


def _request(images=None, mask=None, **kw) -> EditRequest:
    images = images or (InputImage.from_bytes(image_bytes(64, 64), "in.png"),)
    kw.setdefault("prompt", "make it look like dusk")
    kw.setdefault("job_id", "instruct-job")
    return EditRequest(images=tuple(images), mask=mask, **kw)


@pytest.fixture(scope="module")
def qwen(tiny_qwen_edit_dir) -> QwenEditBackend:
    return create_backend("qwen-edit", "qwen", tiny_instruct_settings(tiny_qwen_edit_dir))


@pytest.fixture(scope="module")
def klein(tiny_flux2_klein_dir) -> Flux2KleinBackend:
    return create_backend("flux2-klein", "klein", tiny_instruct_settings(tiny_flux2_klein_dir))


@pytest.fixture(params=KINDS)
def editor(request, qwen, klein):
    return {"qwen-edit": qwen, "flux2-klein": klein}[request.param]


class TestQwenEditContract(BackendContract):
    @pytest.fixture
    def backend(self, qwen):
        return qwen

    @pytest.fixture
    def paid_calls(self, qwen):
        return lambda: qwen.pipeline_calls


class TestFlux2KleinContract(BackendContract):
    @pytest.fixture
    def backend(self, klein):
        return klein

    @pytest.fixture
    def paid_calls(self, klein):
        return lambda: klein.pipeline_calls


def test_maskless_instruction_edit_changes_the_picture(editor):
    assert editor.capabilities.mask_optional
    result = editor.edit(_request(seed=1))
    changed = np.abs(_pixels(result.images[0]) - np.asarray(gradient(64, 64)).astype(int)).sum(axis=2) > 0
    assert changed.mean() > 0.9 and result.extras["mask"] == "none"
    assert result.cost_usd > 0 and result.usage.gpu_seconds > 0


def test_every_input_image_reaches_the_model(editor):
    first = InputImage.from_bytes(image_bytes(64, 64), "in.png")
    one = editor.edit(_request(images=[first, _solid(64, 64)], seed=2))
    other = editor.edit(_request(images=[first, _solid(64, 64, (20, 220, 40))], seed=2))
    assert one.extras["inputs"] == 2
    assert np.abs(_pixels(one.images[0]) - _pixels(other.images[0])).mean() > 1  # the reference matters


def test_a_given_mask_keeps_every_pixel_outside_it(editor):
    box = (8, 8, 32, 24)  # asymmetric: an inverted mask would change the other 85% of the picture
    mask = InputImage.from_bytes(mask_bytes(64, 64, box), "m.png", field="mask")
    result = editor.edit(_request(mask=mask, seed=3))
    out, original = _pixels(result.images[0]), np.asarray(gradient(64, 64)).astype(int)
    inside = np.zeros((64, 64), bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    assert np.array_equal(out[~inside], original[~inside])  # byte-exact: PNG, integer paste-back
    assert np.abs(out[inside] - original[inside]).mean() > 10
    assert result.extras["mask"] == "given"


def test_same_seed_same_bytes_on_another_backend_object(editor):
    first = editor.edit(make_request(n=2, seed=7, mask=False))
    other = create_backend(editor.kind, "again", editor.settings.model_dump())
    again = other.edit(make_request(n=2, seed=7, mask=False))
    assert first.images == again.images and first.seed == 7
    assert first.images[0] != first.images[1]  # n variants, not n copies
    assert editor.edit(make_request(seed=20, mask=False)).images[0] not in first.images  # (7 + 1 = image 1's seed)


def test_a_mask_with_nothing_to_edit_is_refused_before_the_gpu(editor):
    opaque = InputImage.from_bytes(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 255))), "opaque.png", field="mask")
    before = editor.pipeline_calls
    with pytest.raises(InvalidRequest) as info:
        editor.edit(_request(mask=opaque))
    assert info.value.field == "mask" and "nothing to edit" in str(info.value) and "instruct-job" in str(info.value)
    assert editor.pipeline_calls == before


def test_an_all_transparent_mask_is_a_whole_image_edit(editor):
    clear = InputImage.from_bytes(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "clear.png", field="mask")
    with_mask = editor.edit(_request(mask=clear, seed=4))
    without = editor.edit(_request(seed=4))
    assert with_mask.extras["mask"] == "whole image" and with_mask.images == without.images


def test_sizes_follow_the_one_rule_and_the_models_grid(editor):
    wide = InputImage.from_bytes(image_bytes(96, 64), "wide.png")
    auto = editor.edit(_request(images=[wide], seed=5))
    assert (auto.width, auto.height) == (96, 64)  # auto: the first input's own size
    w, h = (int(v) for v in auto.extras["work_size"].split("x"))
    assert w % editor.settings.grid == 0 and h % editor.settings.grid == 0
    fixed = editor.edit(_request(images=[wide], size="1024x1536", seed=5))
    assert Image.open(io.BytesIO(fixed.images[0])).size == (1024, 1536)


def test_out_of_memory_is_unavailable_with_advice_and_the_pipeline_stays_usable(tiny_flux2_klein_dir):
    import torch

    class OnceOOM(Flux2KleinBackend):
        failed = False

        def _call_pipeline(self, pipe, kwargs):
            if not self.failed:
                self.failed = True
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return super()._call_pipeline(pipe, kwargs)

    backend = OnceOOM.from_settings("oom", tiny_instruct_settings(tiny_flux2_klein_dir))
    with pytest.raises(BackendUnavailable) as info:
        backend.edit(make_request(n=3, mask=False))
    message = str(info.value)
    assert "out of GPU memory" in message and "fewer images" in message and "fp8: true" in message
    assert "offload: model" in message and "contract-job" in message
    assert len(backend.edit(make_request(mask=False)).images) == 1


def test_single_image_qwen_checkpoint_is_loaded_as_such(tmp_path):
    from backends.standins.tiny_qwen_edit import build_tiny_qwen_edit

    model = build_tiny_qwen_edit(tmp_path / "qwen-edit-single", variant="edit")
    backend = create_backend("qwen-edit", "single", tiny_instruct_settings(model))
    assert backend.capabilities.max_images == 1 and not backend.capabilities.reference_images
    with pytest.raises(InvalidRequest) as info:
        backend.edit(make_request(images=2, mask=False))
    assert info.value.field == "image" and backend.pipeline_calls == 0
    result = backend.edit(make_request(mask=False, seed=1))
    assert result.extras["pipeline"] == "QwenImageEditPipeline"


def test_klein_base_checkpoint_runs_guided_tiers(tmp_path):
    from backends.standins.tiny_flux2_klein import build_tiny_flux2_klein

    model = build_tiny_flux2_klein(tmp_path / "klein-base", variant="base")
    settings = tiny_instruct_settings(model)
    del settings["tiers"]
    backend = create_backend("flux2-klein", "base", settings)
    assert not backend.settings.is_distilled and backend.settings.tiers["high"].steps == 50
    guided = create_backend("flux2-klein", "b2", tiny_instruct_settings(model, guidance=4.0))
    unguided = create_backend("flux2-klein", "b3", tiny_instruct_settings(model))
    assert guided.estimate(make_request()).usd > unguided.estimate(make_request()).usd  # two passes per step
    assert guided.edit(make_request(seed=1)).images != unguided.edit(make_request(seed=1)).images


def test_few_step_lora_tier_switches_the_lora_on_and_off(tiny_flux2_klein_dir, tiny_flux2_klein_lora_dir):
    settings = tiny_instruct_settings(
        tiny_flux2_klein_dir,
        lora={"model": str(tiny_flux2_klein_lora_dir), "scheduler": "keep"},
        tiers={"low": {"use_lora": True}},
    )
    backend = create_backend("flux2-klein", "lora", settings)
    plain = create_backend("flux2-klein", "plain", tiny_instruct_settings(tiny_flux2_klein_dir))
    fast = backend.edit(make_request(quality="low", seed=3, mask=False))
    assert fast.extras["lora"]
    assert fast.images != plain.edit(make_request(quality="low", seed=3, mask=False)).images
    medium = backend.edit(make_request(quality="medium", seed=3, mask=False))  # the LoRA is off again
    assert medium.images == plain.edit(make_request(quality="medium", seed=3, mask=False)).images


def test_fp8_weight_storage_runs(tiny_flux2_klein_dir):
    backend = create_backend("flux2-klein", "fp8", tiny_instruct_settings(tiny_flux2_klein_dir, fp8=True))
    assert len(backend.edit(make_request(mask=False, seed=1)).images) == 1
    assert "fp8 weights (layerwise casting)" in rt.get_pipeline(backend.settings).notes
    assert backend.settings.memory_need().gib < create_backend("flux2-klein", "x", {}).settings.memory_need().gib


@pytest.mark.parametrize(
    "kind, settings, match",
    [
        ("qwen-edit", {"tiers": {"low": {"steps": 1}}}, "steps >= 2"),
        ("qwen-edit", {"fuse_qkv": True}, "fused QKV"),
        ("qwen-edit", {"max_images": 5}, "max_images"),
        ("flux2-klein", {"tiers": {"ultra": {"steps": 3}}}, "unknown tier"),
        ("flux2-klein", {"tiers": {"low": {"use_lora": True}}}, "use_lora"),
        ("flux2-klein", {"device": "tpu"}, "one of auto, cpu"),
    ],
)
def test_bad_settings_are_misconfiguration_at_policy_load(kind, settings, match):
    with pytest.raises(BackendMisconfigured, match=match):
        create_backend(kind, "x", settings)


def test_estimates_use_the_named_cards_speed_and_say_which():
    qwen_l4 = create_backend("qwen-edit", "q", {"gpu_cost": {"gpu": "L4"}}).estimate(make_request(mask=False))
    qwen_h100 = create_backend("qwen-edit", "q", {"gpu_cost": {"gpu": "H100"}}).estimate(make_request(mask=False))
    assert "on L4 (derived" in qwen_l4.basis and "on H100 (derived" in qwen_h100.basis
    assert qwen_l4.seconds > 3 * qwen_h100.seconds
    owned = create_backend("flux2-klein", "k", {"gpu_cost": {"hourly_usd": "0.50"}, "gpu": "RTX-4090"})
    assert "on RTX-4090" in owned.estimate(make_request()).basis
    unnamed = create_backend("flux2-klein", "k", {"gpu_cost": {"hourly_usd": "0.50"}})
    assert "no card named: set `gpu:`" in unnamed.estimate(make_request()).basis


def test_planning_needs_no_torch_and_no_model():
    code = (
        "import sys; from backends.registry import create_backend; from tests.backend_contract import make_request;"
        "q = create_backend('qwen-edit', 'q', {'device': 'cuda:3', 'gpu_cost': {'gpu': 'L4'}});"
        "k = create_backend('flux2-klein', 'k', {'device': 'cuda:3'});"
        "assert q.capabilities.max_images == 3 and k.capabilities.max_images == 4;"
        "e = [b.estimate(make_request(n=2, images=2, mask=False)) for b in (q, k)];"
        "assert all(x.usd > 0 and x.seconds > 0 for x in e), e;"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_edit_command_runs_klein_from_a_model_directory(tiny_flux2_klein_dir, tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "a.png").write_bytes(image_bytes(96, 64))
    (tmp_path / "b.png").write_bytes(encode(Image.new("RGB", (64, 64), (0, 90, 200))))
    args = ["edit", "--backend", "flux2-klein", "--model", str(tiny_flux2_klein_dir), "--device", "cpu"]
    args += ["--image", str(tmp_path / "a.png"), "--image", str(tmp_path / "b.png"), "--prompt", "put b on a"]
    assert main([*args, "--seed", "3", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr()
    assert Image.open(tmp_path / "out" / "0.png").size == (96, 64)
    assert "flux2-klein" in capsys.readouterr().out


def test_edit_command_reaches_qwen_and_refuses_before_loading(tiny_qwen_edit_dir, tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    images = [arg for _ in range(4) for arg in ("--image", str(tmp_path / "a.png"))]
    args = ["edit", "--backend", "qwen-edit", "--model", str(tiny_qwen_edit_dir), "--device", "cpu", *images]
    loads = rt.loads
    assert main([*args, "--prompt", "x", "--out", str(tmp_path / "out")]) == 2
    assert "at most 3 image(s) on this backend" in capsys.readouterr().err
    assert rt.loads == loads and not (tmp_path / "out").exists()


def test_an_attention_backend_stays_with_its_own_pipeline(tiny_flux2_klein_dir):
    """diffusers makes a model's attention backend the process default: a backend that asks for one (here cuDNN,
    which a CPU cannot run) must not switch every other pipeline in the process to it."""
    cudnn = create_backend(
        "flux2-klein", "cudnn", tiny_instruct_settings(tiny_flux2_klein_dir, attention_backend="_native_cudnn")
    )
    with pytest.raises(BackendUnavailable, match="pipeline failed"):
        cudnn.edit(make_request(mask=False, seed=1))
    plain = create_backend("flux2-klein", "plain", tiny_instruct_settings(tiny_flux2_klein_dir, max_n=9))
    assert len(plain.edit(make_request(mask=False, seed=1)).images) == 1
    with pytest.raises(BackendMisconfigured, match="first_block_cache"):
        create_backend("flux2-klein", "fbc", {"first_block_cache": 0.08})
