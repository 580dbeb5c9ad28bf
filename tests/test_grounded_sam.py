"""Grounding DINO + SAM masks (`mask_inference.grounded_sam`): tiny random-weight models saved and reloaded offline,
the same mask path as CLIPSeg, and a mask-less job on the tiny SDXL backend and through a YAML policy."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from backends import local_models
from backends.base import EditRequest
from backends.errors import BackendMisconfigured, BackendUnavailable
from backends.images import InputImage
from backends.masks import MaskSettings, grounded_sam, infer_mask, probabilities
from tests.fixtures_masking import assert_background_edit_inverts_the_salient_object, mask_alpha
from tests.fixtures_sdxl import tiny_settings
from tests.imagery import encode, gradient


@pytest.fixture(scope="session")
def tiny_grounded_sam_dir(tmp_path_factory) -> Path:
    from backends.standins import build_tiny_grounded_sam

    return build_tiny_grounded_sam(tmp_path_factory.getbasetemp() / "tiny-grounded-sam")


def _gs(model_dir: Path, **extra) -> dict:
    from backends.standins import detector_dir, segmenter_dir

    return {
        "detector": str(detector_dir(model_dir)),
        "segmenter": str(segmenter_dir(model_dir)),
        "box_threshold": 0.01,
        **extra,
    }


def _settings(model_dir: Path, gs: dict | None = None, **extra) -> MaskSettings:
    return MaskSettings(
        grounded_sam=gs or _gs(model_dir), device="cpu", dilate_px=0, feather_px=0, min_coverage=0, **extra
    )


_alpha = mask_alpha


def test_settings_load_with_hub_defaults_and_clear_errors():
    s = MaskSettings(grounded_sam={})
    assert s.grounded_sam is not None
    assert (s.grounded_sam.detector, s.grounded_sam.segmenter) == (
        "IDEA-Research/grounding-dino-tiny",
        "facebook/sam-vit-base",
    )
    with pytest.raises(ValidationError, match="not both"):
        MaskSettings(model="CIDAS/clipseg-rd64-refined", grounded_sam={})
    with pytest.raises(ValidationError, match="extra"):
        MaskSettings(grounded_sam={"box_treshold": 0.3})
    with pytest.raises(ValidationError, match="box_threshold"):
        MaskSettings(grounded_sam={"box_threshold": 1.5})


def test_importing_the_masking_modules_loads_no_torch():
    code = (
        "import sys, backends.masks.infer, backends.masks.grounded_sam, backends.standins.tiny_grounded_sam; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


def test_detector_keeps_the_best_boxes_above_the_threshold(tiny_grounded_sam_dir):
    image = gradient(96, 72)
    boxes, scores = grounded_sam.detect(
        image, "logo", _settings(tiny_grounded_sam_dir, _gs(tiny_grounded_sam_dir, max_boxes=2))
    )
    assert 1 <= len(boxes) <= 2 and scores == sorted(scores, reverse=True) and min(scores) >= 0.01
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 72
    above = (scores[0] + 1) / 2
    none, _ = grounded_sam.detect(
        image, "logo", _settings(tiny_grounded_sam_dir, _gs(tiny_grounded_sam_dir, box_threshold=above))
    )
    assert none == []


def test_sam_segments_the_detected_boxes(tiny_grounded_sam_dir):
    image = gradient(96, 72)
    s = _settings(tiny_grounded_sam_dir)
    boxes, _ = grounded_sam.detect(image, "logo", s)
    prob = probabilities(image, "logo", s)
    assert prob.shape == (72, 96) and 0 <= prob.min() <= prob.max() <= 1
    np.testing.assert_array_equal(prob, grounded_sam.segment(image, boxes, s))
    each = [grounded_sam.segment(image, [box], s) for box in boxes]
    assert len(boxes) > 1 and not np.array_equal(each[0], each[1])  # SAM is prompted by each box
    np.testing.assert_allclose(prob, np.maximum.reduce(each), atol=1e-6)  # the union of the boxes' masks


def test_mask_is_an_rgba_png_with_alpha_0_on_the_segmented_region(tiny_grounded_sam_dir):
    image = gradient(96, 72)
    base = _settings(tiny_grounded_sam_dir)
    prob = probabilities(image, "logo", base)
    threshold = float(np.median(prob))
    found = infer_mask(image, "remove the logo from the shelf", base.model_copy(update={"threshold": threshold}))
    alpha = _alpha(found.mask_png)
    assert alpha.shape == (72, 96)  # the image's size
    np.testing.assert_array_equal(alpha == 0, prob >= threshold)
    assert 0 < found.coverage < 1 and (found.phrase, found.inverted, found.query) == ("logo", False, "logo")

    feathered = infer_mask(
        image, "remove the logo", base.model_copy(update={"threshold": threshold, "dilate_px": 2, "feather_px": 3})
    )
    grown = _alpha(feathered.mask_png)
    assert ((alpha == 0) <= (grown == 0)).all() and ((grown > 0) & (grown < 255)).any()  # dilated, soft edge


def test_a_background_edit_inverts_the_salient_object(tiny_grounded_sam_dir):
    assert_background_edit_inverts_the_salient_object(gradient(96, 72), _settings(tiny_grounded_sam_dir))


def test_nothing_detected_is_backend_unavailable_naming_the_setting(tiny_grounded_sam_dir):
    image = gradient(64, 64)
    _, scores = grounded_sam.detect(image, "red badge", _settings(tiny_grounded_sam_dir))
    strict = _settings(tiny_grounded_sam_dir, _gs(tiny_grounded_sam_dir, box_threshold=(scores[0] + 1) / 2))
    with pytest.raises(BackendUnavailable, match="no region of the image matched the phrase 'red badge'") as info:
        infer_mask(image, "change the red badge to say SALE", strict, job_id="j7")
    assert "grounded_sam.box_threshold" in str(info.value) and info.value.job_id == "j7"


def test_missing_models_name_the_id_and_the_cache(tiny_grounded_sam_dir):
    image = gradient(32, 32)
    with pytest.raises(BackendMisconfigured) as info:
        infer_mask(
            image, "remove the logo", MaskSettings(grounded_sam={"detector": "nobody/no-such-dino"}, device="cpu")
        )
    assert "detector model 'nobody/no-such-dino'" in str(info.value) and "Hugging Face cache at" in str(info.value)
    with pytest.raises(BackendMisconfigured) as info:
        infer_mask(
            image,
            "remove the logo",
            _settings(tiny_grounded_sam_dir, _gs(tiny_grounded_sam_dir, segmenter="nobody/no-such-sam")),
        )
    assert "segmentation model 'nobody/no-such-sam'" in str(info.value)


def test_models_load_once_per_process(tiny_grounded_sam_dir):
    s = _settings(tiny_grounded_sam_dir, threshold=0.01)
    infer_mask(gradient(32, 32), "remove the logo", s)
    before = local_models.loads
    infer_mask(gradient(40, 32), "remove the shelf", s)
    assert local_models.loads == before


# ---- SDXL ---------------------------------------------------------------------------------------------------


def _mask_inference(model_dir: Path) -> dict:
    prob = probabilities(gradient(64, 64), "logo", _settings(model_dir))
    return {
        "grounded_sam": _gs(model_dir),
        "threshold": round(float(np.median(prob)), 6),
        "dilate_px": 0,
        "feather_px": 2,
    }


def test_sdxl_maskless_edit_uses_the_grounded_sam_mask(tiny_sdxl_dir, tiny_grounded_sam_dir):
    from backends.diffusion import SDXLInpaintBackend

    settings = tiny_settings(tiny_sdxl_dir, mask_inference=_mask_inference(tiny_grounded_sam_dir))
    backend = SDXLInpaintBackend.from_settings("sdxl", settings)
    assert backend.capabilities.mask_optional
    img = InputImage.from_bytes(encode(gradient(64, 64)), "in.png")
    result = backend.edit(
        EditRequest(prompt="remove the logo from the shelf", images=(img,), seed=3, quality="medium", job_id="g1")
    )
    assert result.extras["mask_inferred"] is True and result.extras["mask_phrase"] == "logo"
    alpha = _alpha(result.artifacts["mask.png"])
    assert alpha.shape == (64, 64) and 0 < (alpha == 0).mean() < 1
    out = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB")).astype(int)
    src = np.asarray(gradient(64, 64)).astype(int)
    assert np.abs(out[alpha > 0] - src[alpha > 0]).max() == 0  # outside the inferred mask nothing changed


def test_maskless_job_under_a_yaml_policy_records_the_inferred_mask(tmp_path, tiny_sdxl_dir, tiny_grounded_sam_dir):
    from pipeline.run import run_batch

    gradient(64, 64).save(tmp_path / "shelf.png")
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps({"id": "no-mask", "image": "shelf.png", "seed": 1, "prompt": "remove the logo from the shelf"})
        + "\n"
    )
    local = {"kind": "sdxl", **tiny_settings(tiny_sdxl_dir, mask_inference=_mask_inference(tiny_grounded_sam_dir))}
    (tmp_path / "policy.yaml").write_text(
        textwrap.dedent(f"""
        backends:
          api: {{kind: function, cost_per_image: 0.04}}
          local: {json.dumps(local)}
        quality: {{api: 0.8, local: 0.7}}
        objective: {{type: cheapest, min_quality: 0.5}}
    """)
    )
    result = run_batch(tmp_path / "jobs.jsonl", tmp_path / "policy.yaml", tmp_path / "out")
    assert result.ok
    record = json.loads((tmp_path / "out" / "no-mask" / "result.json").read_text())
    assert record["backend"] == "local" and record["extras"]["mask_inferred"] is True
    assert record["extras"]["mask_query"] == "logo"
    assert Image.open(tmp_path / "out" / "no-mask" / "mask.png").size == (64, 64)
