"""GeminiEditBackend against httpx.MockTransport handlers that answer with Google's real bodies."""

from __future__ import annotations

import base64
import functools
import json
import logging
from decimal import Decimal

import httpx
import pytest
from PIL import Image

from backends.base import EditRequest
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    InvalidRequest,
    OutcomeUnknown,
    RateLimited,
)
from backends.google import models, wire
from backends.google.backend import GeminiEditBackend, Settings
from backends.images import InputImage
from backends.pricing import load_prices
from tests.backend_contract import make_request
from tests.imagery import encode, image_bytes

KEY = "AIzaUnitTEST-0123456789abcdefXYZ"
LITE = "gemini-3.1-flash-lite-image"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


@functools.cache
def b64_image(w: int = 1024, h: int = 1024, fmt: str = "png") -> str:
    return base64.b64encode(encode(Image.new("RGB", (w, h), (10, 200, 30)), fmt)).decode()


USAGE = {
    "promptTokenCount": 1127,
    "candidatesTokenCount": 1127,
    "totalTokenCount": 2350,
    "thoughtsTokenCount": 96,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}, {"modality": "IMAGE", "tokenCount": 1120}],
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 7}],
}
# 7 x $0.25 + 1120 x $0.25 + 1120 x $30 + (7 + 96) x $1.50, per 1M
USAGE_USD = Decimal("0.03403625")


def ok_body(parts: list | None = None, usage: dict | None = USAGE) -> dict:
    parts = (
        parts
        if parts is not None
        else [{"text": "Here you go."}, {"inlineData": {"mimeType": "image/png", "data": b64_image()}}]
    )
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        **({"usageMetadata": usage} if usage else {}),
        "modelVersion": LITE,
        "responseId": "r-1",
    }


def google_error(code: int, status: str, message: str, details: list | None = None) -> httpx.Response:
    return httpx.Response(
        code, json={"error": {"code": code, "message": message, "status": status, "details": details or []}}
    )


def retry_info(delay: str) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


class Recorder:
    """Answers from a list (the last repeats) and keeps every request."""

    def __init__(self, *answers):
        self.answers = list(answers) or [httpx.Response(200, json=ok_body())]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


def make_backend(handler, sleeps: list | None = None, **settings) -> GeminiEditBackend:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return GeminiEditBackend(
        "gemini",
        Settings(base_url="https://gl.test", **settings),
        client=client,
        sleep=sleeps.append if sleeps is not None else (lambda s: None),
    )


# ---- the request on the wire ---------------------------------------------------------------------


def test_request_url_header_and_body(key):
    rec = Recorder()
    images = tuple(InputImage.from_bytes(image_bytes(96, 64, f), f"p.{f}") for f in ("png", "jpeg", "webp"))
    make_backend(rec).edit(
        make_request(mask=False).__class__(prompt="put them together", images=images, size="1536x1024")
    )
    req = rec.requests[0]
    assert req.method == "POST" and str(req.url) == f"https://gl.test/v1/models/{LITE}:generateContent"
    assert req.headers["x-goog-api-key"] == KEY and "key" not in req.url.params
    body = rec.body()
    parts = body["contents"][0]["parts"]
    assert body["contents"][0]["role"] == "user" and parts[0] == {"text": "put them together"}
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/jpeg", "image/webp"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[1:]] == [i.read() for i in images]
    # flash-lite is 1K only and refuses imageSize; 1536x1024 is 3:2
    assert body["generationConfig"] == {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "3:2"}}


def test_image_size_only_for_models_that_take_it_and_response_format_placement(key):
    rec = Recorder()
    make_backend(rec, model="gemini-nano-banana-2.1", image_config_field="responseFormat.image").edit(
        make_request(size="1024x1536")
    )
    assert rec.body()["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "responseFormat": {"image": {"aspectRatio": "2:3", "imageSize": "1K"}},
    }


def test_maskless_auto_asks_for_the_inputs_own_aspect_ratio(key):
    rec = Recorder()
    image = InputImage.from_bytes(image_bytes(160, 128), "in.png")
    make_backend(rec).edit(EditRequest(prompt="make it dusk", images=(image,)))
    assert rec.body()["generationConfig"] == {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "5:4"}}


@pytest.mark.parametrize(
    ("w", "h", "ratio"),
    [
        (1024, 1024, "1:1"),
        (1536, 1024, "3:2"),
        (1024, 1536, "2:3"),
        (2000, 1000, "16:9"),
        (3000, 700, "4:1"),
        (64, 64, "1:1"),
    ],
)
def test_nearest_aspect_ratio(w, h, ratio):
    ratios = models.resolve(LITE, load_prices()).aspect_ratios
    assert wire.choose_aspect_ratio(w, h, ratios) == ratio


# ---- parsing, cost, estimate ---------------------------------------------------------------------


def test_cost_is_exact_from_usage_metadata(key):
    result = make_backend(Recorder()).edit(make_request())
    assert result.cost_usd == USAGE_USD
    assert result.usage.input_text_tokens == 7 and result.usage.input_image_tokens == 1120
    assert result.usage.output_tokens == 1127 + 96 and result.usage.total_tokens == 2350
    assert (
        result.extras["calls"][0]["cost_usd"] == str(USAGE_USD) and result.extras["calls"][0]["text"] == "Here you go."
    )


def test_usage_without_details_bills_at_the_image_rates():
    tokens, _ = wire.parse_usage({"promptTokenCount": 100, "candidatesTokenCount": 1120})
    assert tokens == models.TokenCounts(text_in=0, image_in=100, text_out=0, image_out=1120)


def test_last_image_wins_and_thoughts_are_skipped_snake_case_too(key):
    thought = {"inline_data": {"mime_type": "image/png", "data": b64_image(8, 8)}, "thought": True}
    final = {"inline_data": {"mime_type": "image/jpeg", "data": b64_image(1024, 1024, "jpeg")}}
    draft = {"inline_data": {"mime_type": "image/png", "data": b64_image(16, 16)}}
    answer = wire.parse_response(
        {
            "candidates": [{"content": {"parts": [draft, thought, final]}, "finish_reason": "STOP"}],
            "usage_metadata": USAGE,
        }
    )
    assert answer.mime == "image/jpeg" and answer.image == base64.b64decode(b64_image(1024, 1024, "jpeg"))


def test_estimate_before_the_call_is_free(key):
    rec = Recorder()
    est = make_backend(rec).estimate(make_request(n=3, prompt="x" * 40))
    # per call: 10 text + 1120 image tokens in at $0.25, 1120 image tokens out at $30
    assert est.usd == 3 * (Decimal(1130) * Decimal("0.25") + Decimal(1120 * 30)) / 1_000_000
    assert "3 call(s)" in est.basis and "$30.00/1M" in est.basis and rec.requests == []


# ---- safety verdicts: HTTP 200 without an image --------------------------------------------------

SAFETY = [
    (
        "blockReason",
        {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": USAGE},
        ContentRejected,
        "blockReason PROHIBITED_CONTENT",
    ),
    (
        "IMAGE_SAFETY",
        {
            "candidates": [
                {
                    "content": {"parts": []},
                    "finishReason": "IMAGE_SAFETY",
                    "finishMessage": "Unable to show the generated image.",
                }
            ]
        },
        ContentRejected,
        "IMAGE_SAFETY: Unable to show",
    ),
    ("NO_IMAGE", {"candidates": [{"content": {"parts": []}, "finishReason": "NO_IMAGE"}]}, ContentRejected, "NO_IMAGE"),
    ("SAFETY", {"candidates": [{"finishReason": "SAFETY"}]}, ContentRejected, "finishReason SAFETY"),
    (
        "text only",
        ok_body(parts=[{"text": "I cannot edit photos of that."}]),
        ContentRejected,
        "text only (finishReason STOP): 'I cannot edit photos of that.'",
    ),
    (
        "MAX_TOKENS",
        {"candidates": [{"content": {"parts": []}, "finishReason": "MAX_TOKENS"}]},
        BackendUnavailable,
        "MAX_TOKENS",
    ),
    ("no candidates", {"usageMetadata": USAGE}, BackendUnavailable, "no candidates"),
    (
        "bad base64",
        ok_body(parts=[{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]),
        BackendUnavailable,
        "base64",
    ),
]


@pytest.mark.parametrize(("body", "exc_type", "text"), [c[1:] for c in SAFETY], ids=[c[0] for c in SAFETY])
def test_answers_without_an_image_are_classified_and_not_retried(key, body, exc_type, text):
    rec = Recorder(httpx.Response(200, json=body))
    with pytest.raises(exc_type) as info:
        make_backend(rec).edit(make_request())
    assert type(info.value) is exc_type and text in str(info.value) and "contract-job" in str(info.value)
    assert len(rec.requests) == 1


# ---- HTTP errors and retries ---------------------------------------------------------------------

KEY_INVALID = google_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"},
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {KEY}"},
    ],
)
ERRORS = [
    ("key invalid", KEY_INVALID, BackendMisconfigured, 1, "$GEMINI_API_KEY was rejected"),
    (
        "403",
        google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"),
        BackendMisconfigured,
        1,
        "access denied",
    ),
    (
        "404 model",
        google_error(404, "NOT_FOUND", f"models/{LITE} is not found for API version v1"),
        BackendMisconfigured,
        1,
        "retired or misspelt",
    ),
    (
        "no quota",
        google_error(
            429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric: x, limit: 0, model: y", [retry_info("30s")]
        ),
        BackendMisconfigured,
        1,
        "billing",
    ),
    (
        "429",
        google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", [retry_info("0.5s")]),
        RateLimited,
        3,
        "RESOURCE_EXHAUSTED",
    ),
    (
        "bad field",
        google_error(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name "aspectRatio"'),
        InvalidRequest,
        1,
        "Unknown name",
    ),
    (
        "region",
        google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
        BackendMisconfigured,
        1,
        "User location",
    ),
    ("500", google_error(500, "INTERNAL", "An internal error has occurred."), BackendUnavailable, 3, "INTERNAL"),
    ("503 html", httpx.Response(503, text="<html>Service Unavailable</html>"), BackendUnavailable, 3, "Unavailable"),
    ("connect", httpx.ConnectError("connection refused"), BackendUnavailable, 3, "ConnectError"),
    ("timeout", httpx.ReadTimeout("read timed out"), OutcomeUnknown, 3, "may have been billed"),
]


@pytest.mark.parametrize(
    ("answer", "exc_type", "attempts", "text"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_errors_map_to_the_tree_after_the_right_number_of_attempts(key, answer, exc_type, attempts, text):
    rec = Recorder(answer)
    with pytest.raises(exc_type) as info:
        make_backend(rec).edit(make_request())
    assert type(info.value) is exc_type and len(rec.requests) == attempts
    message = str(info.value)
    assert text in message and "contract-job" in message and "'gemini'" in message
    assert KEY not in message and KEY[:12] not in message


def test_retry_info_delay_is_honoured_then_success(key):
    sleeps: list[float] = []
    rec = Recorder(
        google_error(429, "RESOURCE_EXHAUSTED", "slow down", [retry_info("28s")]),
        google_error(503, "UNAVAILABLE", "overloaded"),
        httpx.Response(200, json=ok_body()),
    )
    result = make_backend(rec, sleeps).edit(make_request())
    assert len(rec.requests) == 3 and result.extras["calls"][0]["attempts"] == 3
    assert sleeps[0] == 28.0 and 1.5 <= sleeps[1] <= 2.0  # RetryInfo's wait, then 2 s backoff minus jitter


def test_long_retry_delay_is_handed_to_the_runner_not_slept(key):
    sleeps: list[float] = []
    rec = Recorder(google_error(429, "RESOURCE_EXHAUSTED", "daily quota", [retry_info("3600s")]))
    with pytest.raises(RateLimited) as info:
        make_backend(rec, sleeps).edit(make_request())
    assert info.value.retry_after == 3600 and len(rec.requests) == 1 and sleeps == []


def test_n_calls_one_failing_cancels_the_rest_and_says_what_was_billed(key):
    rec = Recorder(httpx.Response(200, json=ok_body()), google_error(500, "INTERNAL", "boom"))
    with pytest.raises(BackendUnavailable) as info:
        make_backend(rec, max_parallel_calls=1).edit(make_request(n=3))
    assert len(rec.requests) == 1 + 3  # the first call, then 3 attempts of the second; the third never ran
    assert f"1 of 3 calls had succeeded and were billed ${USAGE_USD}" in str(info.value)
    assert info.value.spent_usd == USAGE_USD  # the runner settles it, not $0


def test_image_that_does_not_decode_was_billed_and_says_so(key):
    """A 200 with an image is billed by its usage whether or not the picture decodes: the error carries the cost
    of every call of the job, so the runner settles it instead of counting the attempt as free."""
    junk = base64.b64encode(b"not an image at all").decode()
    rec = Recorder(httpx.Response(200, json=ok_body(parts=[{"inlineData": {"mimeType": "image/png", "data": junk}}])))
    with pytest.raises(BackendUnavailable, match="does not decode") as info:
        make_backend(rec).edit(make_request(n=2))
    assert len(rec.requests) == 2 and info.value.spent_usd == 2 * USAGE_USD


def test_inline_limit_refused_before_any_call(key):
    rec = Recorder()
    huge = InputImage(
        name="huge.png", format="png", width=64, height=64, nbytes=16 << 20, has_alpha=False, data=b"\0" * (16 << 20)
    )
    with pytest.raises(InvalidRequest, match="request limit") as info:
        make_backend(rec).edit(make_request(mask=False).__class__(prompt="x", images=(huge,)))
    assert info.value.field == "image" and rec.requests == []


# ---- configuration -------------------------------------------------------------------------------


def test_key_from_file_wins_missing_key_is_config_error(tmp_path, monkeypatch):
    rec = Recorder()
    backend = make_backend(rec)
    with pytest.raises(BackendMisconfigured, match="GEMINI_API_KEY"):
        backend.edit(make_request())
    assert rec.requests == [] and backend.estimate(make_request()).usd > 0
    (tmp_path / "key").write_text("AIza-from-file\n")
    make_backend(rec, api_key_file=tmp_path / "key").edit(make_request())
    assert rec.requests[0].headers["x-goog-api-key"] == "AIza-from-file"


def test_repr_never_shows_the_key(key):
    backend = make_backend(Recorder())
    assert KEY not in repr(backend) and KEY not in repr(backend.settings)
    assert KEY not in repr(backend.edit(make_request()))


def test_model_lifecycle_is_checked_at_construction(caplog):
    with pytest.raises(BackendMisconfigured, match="shut down on 2026-10-02; use 'gemini-3.1-flash-lite-image'"):
        GeminiEditBackend.from_settings("g", {"model": "gemini-2.5-flash-image"})
    with pytest.raises(BackendMisconfigured, match="known: .*gemini-3-pro-image"):
        GeminiEditBackend.from_settings("g", {"model": "gemini-9-image"})
    with pytest.raises(BackendMisconfigured, match="api_key: Extra inputs are not permitted") as info:
        GeminiEditBackend.from_settings("g", {"api_key": "AIza-inline"})
    assert "AIza-inline" not in str(info.value)
    caplog.set_level(logging.WARNING)
    GeminiEditBackend.from_settings("g", {"model": "gemini-3.1-flash-image"})
    assert "announced to shut down on 2026-10-29; use 'gemini-nano-banana-2.1'" in caplog.text


def test_capabilities_state_what_is_emulated():
    caps = GeminiEditBackend("g", Settings()).capabilities
    assert (caps.mask_mode, caps.n_mode, caps.size_mode, caps.training_data) == (
        "paste_back",
        "parallel_calls",
        "resized",
        "undisclosed",
    )
    assert caps.max_images == 3 and not caps.transparent_background and not caps.input_fidelity
    assert GeminiEditBackend("g", Settings(model="gemini-3-pro-image")).capabilities.max_images == 14


def test_too_many_images_for_the_model_refused_before_spend(key):
    rec = Recorder()
    images = tuple(InputImage.from_bytes(image_bytes(32, 32), f"{i}.png") for i in range(4))
    with pytest.raises(InvalidRequest, match="at most 3") as info:
        make_backend(rec).edit(make_request(mask=False).__class__(prompt="x", images=images))
    assert info.value.field == "image" and rec.requests == []
