"""LoRA (fast low tier) and IP-Adapter (reference images) loaded by config, through the same diffusers loaders as
production (`load_lora_weights`, `load_ip_adapter`), with tiny RANDOM adapters built for the stand-in."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from backends.diffusion import SDXLInpaintBackend
from backends.errors import BackendMisconfigured
from backends.images import InputImage
from backends.standins import build_tiny_ip_adapter, build_tiny_lora
from tests.backend_contract import make_request
from tests.fixtures_sdxl import tiny_settings


def _backend(model_dir, name="sdxl", **overrides) -> SDXLInpaintBackend:
    return SDXLInpaintBackend.from_settings(name, tiny_settings(model_dir, **overrides))


@pytest.fixture(scope="module")
def plain(tiny_sdxl_dir) -> SDXLInpaintBackend:
    return _backend(tiny_sdxl_dir, name="plain")


def test_lora_runs_on_its_tier_only_and_switches_back_and_forth(tiny_sdxl_dir, tmp_path, plain):
    pytest.importorskip("peft")
    lora = build_tiny_lora(tiny_sdxl_dir, tmp_path / "lora")
    fast = _backend(
        tiny_sdxl_dir, name="fast", lora=lora, tiers={"low": {"use_lora": True, "guidance_scale": 0.0, "eta": 0.3}}
    )
    low = fast.edit(make_request(seed=3, quality="low"))
    assert low.extras["lora"] and low.images != plain.edit(make_request(seed=3, quality="low")).images
    medium = fast.edit(make_request(seed=3, quality="medium"))  # LoRA off again, base scheduler back
    assert not medium.extras["lora"]
    assert medium.images == plain.edit(make_request(seed=3, quality="medium")).images
    assert fast.edit(make_request(seed=3, quality="low")).images == low.images  # and on again


def test_fused_lora_applies_to_every_tier(tiny_sdxl_dir, tmp_path, plain):
    pytest.importorskip("peft")
    lora = {**build_tiny_lora(tiny_sdxl_dir, tmp_path / "lora"), "fuse": True}
    every = {t: {"use_lora": True} for t in ("low", "medium", "high")}
    fused = _backend(tiny_sdxl_dir, name="fused", lora=lora, tiers=every)
    assert fused.edit(make_request(seed=4)).images != plain.edit(make_request(seed=4)).images


def test_missing_lora_is_misconfiguration_naming_it(tiny_sdxl_dir, tmp_path):
    backend = _backend(tiny_sdxl_dir, lora={"model": str(tmp_path / "no-lora")}, tiers={"low": {"use_lora": True}})
    with pytest.raises(BackendMisconfigured, match="no-lora"):
        backend.edit(make_request())


@pytest.fixture(scope="module")
def ip_backend(tiny_sdxl_dir, tmp_path_factory) -> SDXLInpaintBackend:
    ip = build_tiny_ip_adapter(tiny_sdxl_dir, tmp_path_factory.mktemp("ip-adapter"))
    return _backend(tiny_sdxl_dir, name="refs", ip_adapter=ip)


def _with_reference(colour: tuple[int, int, int], **kw):
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buf, "PNG")
    req = make_request(**kw)
    return replace(req, images=(*req.images, InputImage.from_bytes(buf.getvalue(), "ref.png")))


def test_reference_images_steer_the_edit_through_the_ip_adapter(ip_backend, plain):
    assert ip_backend.capabilities.max_images == 16 and ip_backend.capabilities.reference_images
    red = ip_backend.edit(_with_reference((200, 30, 30), seed=5, n=2))
    blue = ip_backend.edit(_with_reference((30, 30, 200), seed=5, n=2))
    alone = ip_backend.edit(make_request(seed=5, n=2))
    assert len(red.images) == 2 and red.images != blue.images != alone.images
    # a job without references on the same loaded pipeline runs the IP-Adapter at scale 0: the plain model
    assert alone.images == plain.edit(make_request(seed=5, n=2)).images
    assert ip_backend.batch_key(_with_reference((1, 2, 3))) is None  # references are per call: run alone


def test_without_ip_adapter_the_capability_is_one_image(plain):
    assert plain.capabilities.max_images == 1 and not plain.capabilities.reference_images


def test_missing_ip_adapter_is_misconfiguration_naming_it(tiny_sdxl_dir, tmp_path):
    backend = _backend(tiny_sdxl_dir, ip_adapter={"model": str(tmp_path / "no-ipa")})
    with pytest.raises(BackendMisconfigured, match="no-ipa"):
        backend.edit(make_request())
