"""THE SIZE RULE on every hosted backend (issue 19 item 10; `backends.canvas`): `size: auto` returns the first
input's own width x height, with or without a mask, whatever size the provider made; with a mask, pixels outside
it are the input's own. Each backend against its loopback stand-in, 160x128 in."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from backends.adobe.backend import FireflyEditBackend
from backends.adobe.backend import Settings as FireflySettings
from backends.base import EditRequest
from backends.google.backend import GeminiEditBackend
from backends.google.backend import Settings as GeminiSettings
from backends.images import InputImage
from backends.openai import OpenAIEditBackend
from backends.openai import Settings as OpenAISettings
from backends.pricing import output_tokens
from backends.standins import FakeOpenAIServer
from backends.standins.firefly_server import FakeFireflyServer
from backends.standins.gemini_server import FakeGeminiServer
from tests.imagery import image_bytes, mask_bytes

W, H = 160, 128
BOX = (20, 16, 80, 48)  # the edit region (alpha 0 in OpenAI's mask)
OPENAI_KEY, GEMINI_KEY = "sk-size-SECRET-1a2b3c", "AIzaSize-SECRET-4d5e6f"
FF_ID, FF_SECRET = "ff-size-client", "ff-size-SECRET-7a8b9c"


@pytest.fixture
def openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with FakeOpenAIServer(api_key=OPENAI_KEY) as srv:
        yield OpenAIEditBackend("openai", OpenAISettings(base_url=srv.base_url), sleep=lambda s: None), srv


@pytest.fixture
def gemini(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    with FakeGeminiServer(api_key=GEMINI_KEY) as srv:
        yield GeminiEditBackend("gemini", GeminiSettings(base_url=srv.base_url), sleep=lambda s: None), srv


@pytest.fixture
def firefly(monkeypatch):
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", FF_ID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", FF_SECRET)
    with FakeFireflyServer(client_id=FF_ID, client_secret=FF_SECRET) as srv:
        settings = FireflySettings(
            base_url=srv.base_url, token_url=srv.token_url, poll_interval_s=0.01, price_per_operation_usd="0.06"
        )
        yield FireflyEditBackend("firefly", settings, sleep=lambda s: None), srv


def make_req(*, mask: bool, **kw) -> EditRequest:
    image = InputImage.from_bytes(image_bytes(W, H), "in.png")
    m = InputImage.from_bytes(mask_bytes(W, H, BOX), "mask.png", field="mask") if mask else None
    return EditRequest(prompt="paint the masked corner red", images=(image,), mask=m, size="auto", **kw)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def outside(a: np.ndarray) -> np.ndarray:
    keep = np.ones(a.shape[:2], dtype=bool)
    keep[BOX[1] : BOX[3], BOX[0] : BOX[2]] = False
    return a[keep]


@pytest.mark.parametrize("backend_fixture", ["openai", "gemini", "firefly"])
@pytest.mark.parametrize("mask", [True, False], ids=["masked", "maskless"])
def test_size_auto_returns_the_inputs_own_size(request, backend_fixture, mask):
    backend, _srv = request.getfixturevalue(backend_fixture)
    req = make_req(mask=mask)
    result = backend.edit(req)
    assert result.size == f"{W}x{H}"
    for data in result.images:
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (W, H)
    assert f" -> {W}x{H}" in result.extras["resized"]  # and says so
    original = pixels(req.images[0].read())
    out = pixels(result.images[0])
    if mask:
        assert np.array_equal(outside(out), outside(original))  # outside the mask: the input's own pixels
    assert not np.array_equal(out, original)  # and it is an edit


def test_openai_bills_the_size_it_asked_for_and_keeps_transparency(openai):
    backend, srv = openai
    result = backend.edit(make_req(mask=True, quality="low", background="transparent"))
    assert result.size == f"{W}x{H}" and result.extras["resized"].startswith(f"1536x1024 -> {W}x{H}")
    assert srv.requests[-1].fields.get("size", "auto") == "auto"  # the API chose its bucket, as asked
    assert result.usage.output_tokens == output_tokens(backend.prices, "low", "1536x1024")  # and billed it
    with Image.open(io.BytesIO(result.images[0])) as img:
        assert img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255  # transparency kept
    assert result.extras["pasted_back"] is False  # compositing would flatten it


def test_openai_at_an_explicit_size_is_left_as_the_api_made_it(openai):
    backend, _srv = openai
    result = backend.edit(replace(make_req(mask=True), size="1024x1024"))
    assert result.size == "1024x1024" and "resized" not in result.extras
