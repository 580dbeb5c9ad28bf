"""Issue 19's checks for every self-hosted backend: a mask with nothing to edit is refused before any GPU time,
an all-transparent mask is a whole-image edit only where the backend can do one, and estimates use a speed for
the GPU the policy names (and say which)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from backends.diffusion import SDXLInpaintBackend
from backends.errors import InvalidRequest
from backends.images import InputImage
from tests.backend_contract import make_request
from tests.fixtures_sdxl import tiny_settings
from tests.imagery import encode

REPO = Path(__file__).resolve().parents[1]


def _mask(alpha: int) -> InputImage:
    return InputImage.from_bytes(encode(Image.new("RGBA", (64, 64), (0, 0, 0, alpha))), "m.png", field="mask")


def _with_mask(alpha: int):
    req = make_request()
    return type(req)(**{**req.__dict__, "mask": _mask(alpha)})


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir) -> SDXLInpaintBackend:
    return SDXLInpaintBackend.from_settings("sdxl", tiny_settings(tiny_sdxl_dir))


def test_sdxl_refuses_a_fully_opaque_mask_before_the_pipeline(sdxl):
    before = sdxl.pipeline_calls
    with pytest.raises(InvalidRequest) as info:
        sdxl.edit(_with_mask(255))
    assert info.value.field == "mask" and "nothing to edit" in str(info.value) and "contract-job" in str(info.value)
    assert sdxl.pipeline_calls == before


def test_sdxl_takes_an_all_transparent_mask_only_as_img2img(sdxl, tiny_sdxl_dir):
    before = sdxl.pipeline_calls
    with pytest.raises(InvalidRequest, match="maskless: img2img"):
        sdxl.edit(_with_mask(0))
    assert sdxl.pipeline_calls == before
    img2img = SDXLInpaintBackend.from_settings("whole", tiny_settings(tiny_sdxl_dir, maskless="img2img"))
    result = img2img.edit(_with_mask(0))
    assert result.extras["mask"] == "img2img" and result.extras["strength"] == 0.75


@pytest.mark.parametrize("policy", ["balanced", "quality-first", "volume-shift"])
def test_l4_policies_estimate_sdxl_at_an_l4_speed_and_say_so(policy):
    from pipeline.routing import build_backends, load_policy

    backends = build_backends(load_policy(REPO / "configs" / "policies" / f"{policy}.yaml"))
    estimate = backends["sdxl-local"].estimate(make_request(quality="high"))
    assert "on L4 (derived" in estimate.basis and "L4 list" in estimate.basis
    a100 = SDXLInpaintBackend.from_settings("a100", {"gpu_cost": {"gpu": "A100-80GB"}}).estimate(
        make_request(quality="high")
    )
    assert estimate.seconds > 2 * a100.seconds  # the L4 is ~2.6x slower, not an A100
