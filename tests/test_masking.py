"""Text-prompted masks: phrase extraction, CLIPSeg masks from a tiny random-weight model saved and reloaded
offline, and mask-less jobs on the SDXL backend (and through the router) with the derived mask kept."""

from __future__ import annotations

import io
import json
import textwrap

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from backends import local_models
from backends.base import EditRequest
from backends.errors import BackendMisconfigured, BackendUnavailable, InvalidRequest
from backends.images import InputImage
from backends.masks import MaskSettings, box_sum, extract_target, infer_mask, probabilities
from tests.fixtures_masking import assert_background_edit_inverts_the_salient_object, mask_alpha
from tests.fixtures_sdxl import tiny_settings
from tests.imagery import encode, gradient


@pytest.mark.parametrize(
    ("prompt", "phrase", "inverted"),
    [
        ("remove the logo from the shelf", "logo", False),
        ("replace the background with a white studio backdrop", "background", True),
        ("change the red badge to say SALE", "red badge", False),
        ("make the sky a sunset", "sky", False),
        (
            "Replace the background with a clean white studio backdrop and a soft drop shadow under the product",
            "background",
            True,
        ),
        ("Replace the badge text 'SALE' with the French word 'SOLDES', same font and colours", "badge text", False),
        ("Swap the red badge for the Japanese market logo, keep the layout", "red badge", False),
        ("Place a red velvet armchair on the floor", "floor", False),
        ("Hang an abstract blue painting on the wall", "wall", False),
        ("turn the car red", "car", False),
        ("change the colour of the car to blue", "car", False),
        ("Erase the watermark.", "watermark", False),
        ("Remove the person’s hat", "person's hat", False),
        ("put a cat on the sofa behind the table", "sofa", False),
        ("change the backdrop to a beach", "background", True),
        ("Add a hat to the dog", "dog", False),
        ("add snow to the roof", "roof", False),
        ("change the shirt colour to red", "shirt", False),
        ("put the vase on top of the table", "table", False),
        ("hang a clock in front of the window", "window", False),
    ],
)
def test_phrase_extraction_table(prompt, phrase, inverted):
    target = extract_target(prompt)
    assert (target.phrase, target.inverted, target.matched) == (phrase, inverted, True)


@pytest.mark.parametrize(
    "prompt", ["Place a tall brass floor lamp here", "make it pop", "Variations of this summer ad, bright and warm"]
)
def test_phrase_extraction_falls_back_to_the_prompt(prompt):
    target = extract_target(prompt)
    assert not target.matched and not target.inverted
    assert target.phrase and target.phrase.split()[0] == prompt.lower().split()[0]


def test_mask_settings_defaults_and_errors():
    s = MaskSettings()
    assert s.model == "CIDAS/clipseg-rd64-refined" and 0 < s.threshold < 1
    with pytest.raises(ValidationError, match="not both"):  # Grounding DINO + SAM replaces CLIPSeg
        MaskSettings(model="CIDAS/clipseg-rd64-refined", grounded_sam={"detector": "IDEA-Research/grounding-dino-tiny"})
    with pytest.raises(ValidationError, match="extra"):
        MaskSettings(treshold=0.5)


_alpha = mask_alpha


def test_tiny_clipseg_reloads_and_mask_is_the_thresholded_region(tiny_clipseg_dir):
    image = gradient(96, 72)
    base = MaskSettings(model=str(tiny_clipseg_dir), device="cpu", dilate_px=0, feather_px=0, min_coverage=0)
    prob = probabilities(image, "logo", base)
    assert prob.shape == (72, 96)
    threshold = float(np.median(prob))
    found = infer_mask(image, "remove the logo from the shelf", base.model_copy(update={"threshold": threshold}))
    alpha = _alpha(found.mask_png)
    assert alpha.shape == (72, 96)  # same size as the image
    np.testing.assert_array_equal(alpha == 0, prob >= threshold)  # alpha 0 exactly on the matched region
    assert set(np.unique(alpha)) <= {0, 255}
    assert (found.phrase, found.inverted, found.query) == ("logo", False, "logo")
    assert found.coverage == pytest.approx(float((prob >= threshold).mean()))

    assert_background_edit_inverts_the_salient_object(image, base)


def test_dilate_grows_the_region_and_feather_stays_outside_it(tiny_clipseg_dir):
    image = gradient(80, 80)
    base = MaskSettings(model=str(tiny_clipseg_dir), device="cpu", dilate_px=0, feather_px=0, min_coverage=0)
    prob = probabilities(image, "logo", base)
    threshold = float(np.quantile(prob, 0.9))
    plain = _alpha(infer_mask(image, "remove the logo", base.model_copy(update={"threshold": threshold})).mask_png)
    grown = _alpha(
        infer_mask(
            image, "remove the logo", base.model_copy(update={"threshold": threshold, "dilate_px": 3, "feather_px": 4})
        ).mask_png
    )
    assert ((plain == 0) <= (grown == 0)).all()  # every matched pixel is still edited
    assert (grown == 0).sum() > (plain == 0).sum()
    ramp = (grown > 0) & (grown < 255)
    assert ramp.any()  # a soft edge exists, and only outside the edit region
    assert box_sum(grown == 0, 4)[ramp].min() > 0  # within feather_px of the region


def test_empty_match_is_a_clear_error_that_lets_the_job_fall_back(tiny_clipseg_dir):
    image = gradient(64, 64)
    base = MaskSettings(model=str(tiny_clipseg_dir), device="cpu")
    top = float(probabilities(image, "red badge", base).max())
    assert top < 1.0
    with pytest.raises(BackendUnavailable, match="no region of the image matched the phrase 'red badge'") as info:
        infer_mask(image, "change the red badge to say SALE", base.model_copy(update={"threshold": (top + 1) / 2}))
    assert not isinstance(info.value, InvalidRequest) and info.value.job_id is None


def test_models_load_once_per_process(tiny_clipseg_dir):
    s = MaskSettings(model=str(tiny_clipseg_dir), device="cpu", threshold=0.01)
    infer_mask(gradient(32, 32), "remove the logo", s)
    before = local_models.loads
    infer_mask(gradient(40, 32), "remove the shelf", s)
    assert local_models.loads == before


def test_missing_model_names_the_id_and_the_cache():
    s = MaskSettings(model="nobody/no-such-clipseg", device="cpu")
    with pytest.raises(BackendMisconfigured) as info:
        infer_mask(gradient(32, 32), "remove the logo", s)
    msg = str(info.value)
    assert "nobody/no-such-clipseg" in msg and "Hugging Face cache at" in msg


def test_missing_local_model_directory_is_named_as_a_directory(tmp_path):
    missing = tmp_path / "no-such-clipseg"
    with pytest.raises(BackendMisconfigured) as info:
        infer_mask(gradient(32, 32), "remove the logo", MaskSettings(model=str(missing), device="cpu"))
    msg = str(info.value)
    assert f"directory {missing}" in msg and "Hugging Face cache" not in msg and "hf download" not in msg


# ---- SDXL integration ------------------------------------------------------------------------------------


def _median_threshold(model_dir, query: str) -> float:
    """A threshold that selects about half of the 64x64 test picture under the random-weight model."""
    prob = probabilities(gradient(64, 64), query, MaskSettings(model=str(model_dir), device="cpu"))
    return round(float(np.median(prob)), 6)


def _maskless(prompt: str = "remove the logo from the shelf", size=(64, 64)) -> EditRequest:
    img = InputImage.from_bytes(encode(gradient(*size)), "in.png")
    return EditRequest(prompt=prompt, images=(img,), seed=3, quality="medium", job_id="m1")


def test_sdxl_mask_optional_follows_settings_without_loading_anything(tiny_clipseg_dir):
    from backends.diffusion import SDXLInpaintBackend
    from backends.diffusion import runtime as diffusion_runtime

    loads = (local_models.loads, diffusion_runtime.loads)
    plain = SDXLInpaintBackend.from_settings("sdxl", {"model": "x"})
    inferring = SDXLInpaintBackend.from_settings("sdxl", {"model": "x", "mask_inference": {"model": "y"}})
    grounded = SDXLInpaintBackend.from_settings("sdxl", {"model": "x", "mask_inference": {"grounded_sam": {}}})
    assert not plain.capabilities.mask_optional and inferring.capabilities.mask_optional
    assert grounded.capabilities.mask_optional
    assert (local_models.loads, diffusion_runtime.loads) == loads


def test_sdxl_maskless_edit_uses_the_inferred_mask(tiny_sdxl_dir, tiny_clipseg_dir):
    from backends.diffusion import SDXLInpaintBackend

    mask_settings = {
        "model": str(tiny_clipseg_dir),
        "threshold": _median_threshold(tiny_clipseg_dir, "logo"),
        "dilate_px": 0,
        "feather_px": 2,
    }
    backend = SDXLInpaintBackend.from_settings("sdxl", tiny_settings(tiny_sdxl_dir, mask_inference=mask_settings))
    request = _maskless()
    result = backend.edit(request)
    assert result.extras["mask_inferred"] is True and result.extras["mask_phrase"] == "logo"
    assert result.extras["mask"] == "inferred"
    alpha = _alpha(result.artifacts["mask.png"])
    assert alpha.shape == (64, 64) and 0 < (alpha == 0).mean() < 1
    out = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB")).astype(int)
    src = np.asarray(gradient(64, 64)).astype(int)
    keep = alpha > 0
    assert np.abs(out[keep] - src[keep]).max() == 0  # outside the inferred mask nothing changed
    assert (out[~keep] != src[~keep]).any()  # inside it the model repainted


def _maskless_shelf_job(tmp_path, tiny_sdxl_dir, mask_settings, extra_policy: str = ""):
    """A mask-less job on a 64x64 image and a policy: a $0.04 API fake, and tiny SDXL inferring masks."""
    gradient(64, 64).save(tmp_path / "shelf.png")
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps({"id": "no-mask", "image": "shelf.png", "seed": 1, "prompt": "remove the logo from the shelf"})
        + "\n"
    )
    sdxl = {"kind": "sdxl", **tiny_settings(tiny_sdxl_dir, mask_inference=mask_settings)}
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(f"""
        backends:
          api: {{kind: function, cost_per_image: 0.04}}
          local: {json.dumps(sdxl)}
        quality: {{api: 0.8, local: 0.7}}
        objective: {{type: cheapest, min_quality: 0.5}}
    """)
        + extra_policy
    )
    return tmp_path / "jobs.jsonl", policy


def test_maskless_job_routes_to_sdxl_and_keeps_the_mask(tmp_path, tiny_sdxl_dir, tiny_clipseg_dir):
    from pipeline.run import run_batch

    mask_settings = {"model": str(tiny_clipseg_dir), "threshold": _median_threshold(tiny_clipseg_dir, "logo")}
    jobs, policy = _maskless_shelf_job(tmp_path, tiny_sdxl_dir, mask_settings)
    without = tmp_path / "without.yaml"
    without.write_text(
        policy.read_text()
        .replace(f'"mask_inference": {json.dumps(mask_settings)}', '"seed": 0')
        .replace(', "seed": 0', "")
    )
    assert _route(without, jobs) == "api"  # no mask model: only the API can run it
    assert _route(policy, jobs) == "local"
    result = run_batch(jobs, policy, tmp_path / "out")
    assert result.ok
    record = json.loads((tmp_path / "out" / "no-mask" / "result.json").read_text())
    assert record["backend"] == "local"
    assert record["extras"]["mask_inferred"] is True and record["extras"]["mask_phrase"] == "logo"
    mask = tmp_path / "out" / "no-mask" / "mask.png"
    assert mask.is_file() and {"path": "no-mask/mask.png"}.items() <= record["artifacts"][0].items()
    assert Image.open(mask).size == (64, 64)


def test_no_region_found_falls_back_to_a_backend_that_needs_no_mask(tmp_path, tiny_sdxl_dir, tiny_clipseg_dir):
    from pipeline.run import run_batch

    top = float(probabilities(gradient(64, 64), "logo", MaskSettings(model=str(tiny_clipseg_dir), device="cpu")).max())
    impossible = {"model": str(tiny_clipseg_dir), "threshold": (top + 1) / 2}  # above every pixel's score
    jobs, policy = _maskless_shelf_job(tmp_path, tiny_sdxl_dir, impossible, "fallbacks: {local: [api]}\n")
    assert _route(policy, jobs) == "local"
    result = run_batch(jobs, policy, tmp_path / "out")
    assert result.ok
    record = json.loads((tmp_path / "out" / "no-mask" / "result.json").read_text())
    assert record["backend"] == "api"
    assert any("no region of the image matched" in str(a.get("error")) for a in record["attempts"])


def _route(policy_path, manifest) -> str | None:
    from pipeline.jobs import load_jobs
    from pipeline.routing import InMemorySpend, Router, build_backends, load_policy

    policy = load_policy(policy_path)
    return Router(policy, build_backends(policy), InMemorySpend()).route(load_jobs(manifest)[0]).backend


def test_shipped_cost_first_infers_the_mask_of_the_maskless_example(
    tmp_path, tiny_sdxl_dir, tiny_clipseg_dir, monkeypatch
):
    """The shipped example job without a mask, under the shipped cost-first policy (pointed at the stand-ins as
    `editroute demo` does): it runs self-hosted and its inferred mask lands beside the output."""
    import yaml

    from pipeline.commands.demo import DEMO_KEY, DEMO_KEY_ENV, ROOT, standin_policy
    from pipeline.run import run_batch

    monkeypatch.setenv(DEMO_KEY_ENV, DEMO_KEY)
    data = standin_policy(
        ROOT / "configs" / "policies" / "cost-first.yaml",
        api_url="http://127.0.0.1:9/v1",
        sdxl_dir=tiny_sdxl_dir,
        clipseg_dir=tiny_clipseg_dir,
    )
    assert data["backends"]["sdxl-local"]["mask_inference"]["model"] == str(tiny_clipseg_dir)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(data))
    entry = next(
        json.loads(line)
        for line in (ROOT / "examples" / "all.jsonl").read_text().splitlines()
        if json.loads(line)["id"] == "ecom-shoe-nomask"
    )
    assert "mask" not in entry
    entry["image"] = str(ROOT / "examples" / entry["image"])
    (tmp_path / "jobs.jsonl").write_text(json.dumps(entry) + "\n")
    result = run_batch(tmp_path / "jobs.jsonl", tmp_path / "policy.yaml", tmp_path / "out")
    assert result.ok
    record = json.loads((tmp_path / "out" / "ecom-shoe-nomask" / "result.json").read_text())
    assert record["backend"] == "sdxl-local" and record["extras"]["mask_inferred"] is True
    assert record["extras"]["mask_phrase"] == "background" and record["extras"]["mask_inverted"] is True
    mask = Image.open(tmp_path / "out" / "ecom-shoe-nomask" / "mask.png")
    assert mask.mode == "RGBA" and mask.size == Image.open(entry["image"]).size
