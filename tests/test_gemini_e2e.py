"""End to end on 127.0.0.1: GeminiEditBackend and Google's own SDK (google-genai) against the Gemini stand-in."""

from __future__ import annotations

import base64
import io
import logging
from decimal import Decimal

import numpy as np
import pytest
from PIL import Image

from backends.base import EditRequest
from backends.errors import BackendMisconfigured, BackendUnavailable, ContentRejected, EditError, InvalidRequest
from backends.google.backend import GeminiEditBackend, Settings
from backends.images import InputImage
from backends.standins.gemini_server import FakeGeminiServer
from tests.backend_contract import BackendContract, make_request
from tests.hosted_helpers import billed_by_gemini
from tests.imagery import encode, gradient, image_bytes, mask_bytes

KEY = "AIzaE2E-SECRET-7f3a9c1b5d2e8f"
LITE = "gemini-3.1-flash-lite-image"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


@pytest.fixture
def server():
    with FakeGeminiServer(api_key=KEY) as srv:
        yield srv


def backend_for(srv: FakeGeminiServer, slept: list | None = None, **settings) -> GeminiEditBackend:
    return GeminiEditBackend(
        "gemini",
        Settings(base_url=srv.base_url, **settings),
        sleep=slept.append if slept is not None else (lambda s: None),
    )


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


class TestGeminiContract(BackendContract):
    @pytest.fixture
    def backend(self, server, key):
        b = backend_for(server)
        yield b
        b.close()

    @pytest.fixture
    def paid_calls(self, server):
        return lambda: len(server.calls)


# ---- what a user sees ----------------------------------------------------------------------------


@pytest.mark.parametrize("provider_mime", ["image/png", "image/jpeg"])
def test_masked_edit_leaves_every_pixel_outside_the_mask_unchanged(key, provider_mime):
    with FakeGeminiServer(api_key=KEY, output_mime=provider_mime) as srv:
        req = make_request(prompt="a red ball in the corner")
        result = backend_for(srv).edit(req)
    before, after = pixels(req.images[0].read()), pixels(result.images[0])
    edit = np.asarray(req.mask.open().getchannel("A")) == 0
    assert after.shape == before.shape == (64, 64, 3)
    assert np.array_equal(after[~edit], before[~edit])  # byte-exact outside the mask, although Gemini changed all
    assert (after[edit] != before[edit]).any(-1).mean() > 0.9
    assert result.extras["mask_mode"] == "paste_back" and result.extras["pasted_back"] is True
    assert result.extras["provider_size"] == "1024x1024" and "64x64" in result.extras["resized"]


def test_masked_edit_at_another_size_says_it_was_resized(server, key):
    result = backend_for(server).edit(make_request(size="1536x1024"))
    assert result.size == "1536x1024" and result.extras["aspect_ratio"] == "3:2"
    assert (
        result.extras["provider_size"] == "1248x832" and "-> 1536x1024 (cover, centre crop)" in result.extras["resized"]
    )
    assert server.calls[0].body["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}


def test_maskless_edit_at_size_auto_comes_back_at_the_inputs_own_size(server, key):
    """THE SIZE RULE (issue 19 item 10): 160x128 in, size auto -> 160x128 out, whatever size the model made."""
    image = InputImage.from_bytes(image_bytes(160, 128), "in.png")
    req = EditRequest(prompt="make it dusk", images=(image,), output_format="jpeg", output_compression=90)
    result = backend_for(server).edit(req)
    assert result.size == "160x128" and result.extras["mask_mode"] == "none"
    assert server.calls[0].body["generationConfig"]["imageConfig"] == {"aspectRatio": "5:4"}  # the input's ratio
    assert result.extras["resized"].startswith(f"{result.extras['provider_size']} -> 160x128")
    with Image.open(io.BytesIO(result.images[0])) as img:
        assert img.format == "JPEG" and img.size == (160, 128)


def test_multi_image_edit_sends_every_image_in_order(server, key):
    images = tuple(
        InputImage.from_bytes(image_bytes(48 + 16 * i, 64, f), f"in{i}.{f}")
        for i, f in enumerate(("png", "jpeg", "webp"))
    )
    result = backend_for(server).edit(
        EditRequest(prompt="the product on the background with the logo", images=images, size="1024x1024")
    )
    parts = server.calls[0].body["contents"][0]["parts"]
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/jpeg", "image/webp"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[1:]] == [i.read() for i in images]
    assert result.size == "1024x1024" and result.usage.input_image_tokens == 3 * 1120
    with pytest.raises(InvalidRequest, match="at most 3"):
        backend_for(server).edit(EditRequest(prompt="x", images=images + images[:1]))
    assert len(server.calls) == 1


def test_n3_is_three_calls_each_billed_and_summed_exactly(server, key):
    result = backend_for(server).edit(make_request(n=3))
    assert len(server.calls) == 3 and [c.status for c in server.calls] == [200, 200, 200]
    assert len(result.images) == 3 and len(set(result.images)) == 3  # three samples, not one copied
    calls = result.extras["calls"]
    assert [c["attempts"] for c in calls] == [1, 1, 1] and len({c["response_id"] for c in calls}) == 3
    assert sum(Decimal(c["cost_usd"]) for c in calls) == result.cost_usd == billed_by_gemini(server)
    # each: 7 text + 1120 image tokens in at $0.25, 1120 image tokens out at $30, 96 thinking tokens at $1.50
    assert result.cost_usd == 3 * Decimal("0.03402575")
    assert result.usage.input_image_tokens == 3 * 1120 and result.usage.output_tokens == 3 * (1120 + 96)


def test_response_format_image_placement_is_served_too(server, key):
    backend_for(server, image_config_field="responseFormat.image").edit(make_request(size="1024x1536"))
    assert server.calls[0].body["generationConfig"]["responseFormat"] == {"image": {"aspectRatio": "2:3"}}
    assert server.calls[0].status == 200


# ---- failure modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "text"),
    [
        ("block-prompt", "blockReason SAFETY"),
        ("image-safety", "finishReason IMAGE_SAFETY"),
        ("no-image", "finishReason NO_IMAGE"),
        ("text-only", "text only"),
    ],
)
def test_safety_outcomes_are_content_rejected_without_retry(server, key, word, text):
    with pytest.raises(ContentRejected, match=text):
        backend_for(server).edit(make_request(prompt=f"a {word} scene"))
    assert [c.status for c in server.calls] == [200]


def test_429_with_retry_info_is_waited_then_succeeds(key):
    slept: list[float] = []
    with FakeGeminiServer(api_key=KEY, script=[{"status": 429, "retry_delay": "0.02s"}]) as srv:
        result = backend_for(srv, slept).edit(make_request())
    assert [c.status for c in srv.calls] == [429, 200] and slept == [0.02]
    assert result.extras["calls"][0]["attempts"] == 2


def test_real_rate_limit_window_is_waited_out(key):
    with FakeGeminiServer(api_key=KEY, rate_limit_rpm=1, rate_window_s=0.3) as srv:
        backend = GeminiEditBackend("gemini", Settings(base_url=srv.base_url))  # real sleeps
        backend.edit(make_request(mask=False))
        backend.edit(make_request(mask=False))
    assert [c.status for c in srv.calls] == [200, 429, 200]


@pytest.mark.parametrize(
    ("script", "exc_type", "calls", "text"),
    [
        ([503, 503, 503], BackendUnavailable, 3, "UNAVAILABLE"),
        (["drop", "drop", "drop"], BackendUnavailable, 3, "connection failed"),
        ([{"status": 429, "no_quota": True}], BackendMisconfigured, 1, "billing"),
    ],
    ids=["5xx", "dropped", "no quota"],
)
def test_server_failures_map_after_retries(key, script, exc_type, calls, text):
    with FakeGeminiServer(api_key=KEY, script=script) as srv:
        with pytest.raises(exc_type, match=text):
            backend_for(srv).edit(make_request())
    assert len(srv.calls) == calls


def test_retired_model_is_a_config_error_never_retried(key):
    with FakeGeminiServer(api_key=KEY, retired=(LITE,)) as srv:
        with pytest.raises(BackendMisconfigured, match=f"model '{LITE}' not found: retired or misspelt"):
            backend_for(srv).edit(make_request())
    assert [c.status for c in srv.calls] == [404]


def test_wrong_key_is_a_config_error_that_hides_both_keys(server, monkeypatch):
    wrong = "AIzaWRONG-000011112222333344"
    monkeypatch.setenv("GEMINI_API_KEY", wrong)
    with pytest.raises(BackendMisconfigured, match=r"\$GEMINI_API_KEY was rejected") as info:
        backend_for(server).edit(make_request())
    assert wrong not in str(info.value) and KEY not in str(info.value)  # the stand-in echoes it, like Google
    assert server.calls[0].status == 400 and server.calls[0].auth == "header"


def test_api_key_never_appears_in_logs_results_or_errors(key, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    script = [{"status": 429, "retry_delay": "0.001s"}, "drop", "ok", "ok", 500, 500, 500]
    with FakeGeminiServer(api_key=KEY, script=script) as srv:
        backend = backend_for(srv)
        seen += [repr(backend), repr(backend.settings), repr(srv), repr(srv.calls)]
        result = backend.edit(make_request())
        seen += [repr(result), repr(result.extras)]
        for bad in [make_request(prompt="block-prompt"), make_request(), make_request(n=0)]:
            try:
                backend.edit(bad)
            except EditError as exc:
                seen += [str(exc), repr(exc), repr(exc.__dict__), repr(exc.__reduce__())]
        seen += [repr(c.__dict__) for c in srv.calls]
    seen += [caplog.text] + [r.getMessage() + repr(r.args) for r in caplog.records]
    assert any("HTTP Request: POST" in s for s in seen)  # httpx's own logging was captured
    assert [s[:200] for s in seen if KEY in s or KEY[-10:] in s] == []


# ---- our request is what Google's SDK sends; Google's SDK reads our stand-in -----------------------


def _normalised(body: dict) -> dict:
    """camelCase keys everywhere and base64 decoded (the SDK sends `mime_type` and URL-safe base64)."""

    def walk(v):
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                head, *rest = k.split("_")
                out[head + "".join(w.title() for w in rest)] = walk(x)
            if "data" in out and "mimeType" in out:
                out["data"] = base64.b64decode(out["data"].replace("-", "+").replace("_", "/"))
            return out
        return [walk(x) for x in v] if isinstance(v, list) else v

    return walk(body)


def test_our_request_matches_google_genai(server, key):
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    files = [(image_bytes(64, 64, "png"), "image/png"), (encode(gradient(80, 48), "jpeg"), "image/jpeg")]
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=server.base_url))
    client.models.generate_content(
        model=LITE,
        contents=[
            types.Part.from_text(text="swap the sky"),
            *[types.Part.from_bytes(data=d, mime_type=m) for d, m in files],
        ],
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="3:2")
        ),
    )
    backend_for(server).edit(
        EditRequest(
            prompt="swap the sky",
            images=tuple(InputImage.from_bytes(d, f"in{i}") for i, (d, _) in enumerate(files)),
            size="1536x1024",
        )
    )
    sdk, ours = server.calls
    assert sdk.status == ours.status == 200
    assert sdk.path == ours.path == f"/v1/models/{LITE}:generateContent" and sdk.auth == ours.auth == "header"
    assert _normalised(ours.body) == _normalised(sdk.body)


def test_google_genai_reads_our_answers_and_errors(key):
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    with FakeGeminiServer(api_key=KEY, script=["ok", {"status": 429, "retry_delay": "7s"}]) as srv:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=srv.base_url))
        contents = [types.Part.from_text(text="x"), types.Part.from_bytes(data=mask_bytes(), mime_type="image/png")]
        resp = client.models.generate_content(model=LITE, contents=contents)
        part = next(p for p in resp.candidates[0].content.parts if p.inline_data)
        assert Image.open(io.BytesIO(part.inline_data.data)).size == (1024, 1024)
        assert resp.usage_metadata.candidates_tokens_details[0].token_count == 1120
        assert resp.candidates[0].finish_reason == types.FinishReason.STOP
        with pytest.raises(genai.errors.ClientError) as info:
            client.models.generate_content(model=LITE, contents=contents)
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in info.value.details["error"][
        "details"
    ]
