"""OpenAIEditBackend against httpx.MockTransport handlers that answer with real bodies."""

from __future__ import annotations

import base64
import email.utils
import functools
import time
from decimal import Decimal
from email import policy
from email.parser import BytesParser

import httpx
import pytest
from PIL import Image

from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    InvalidRequest,
    OutcomeUnknown,
    RateLimited,
)
from backends.images import InputImage
from backends.openai import OpenAIEditBackend, Settings, wire
from tests.backend_contract import make_request
from tests.imagery import encode, image_bytes

KEY = "sk-unit-KEY-0123456789abcdef"
GPT1_USAGE = {
    "input_tokens": 219,
    "input_tokens_details": {"image_tokens": 194, "text_tokens": 25},
    "output_tokens": 4160,
    "total_tokens": 4379,
}


@functools.cache
def b64_image(w: int, h: int, fmt: str) -> str:
    return base64.b64encode(encode(Image.new("RGB", (w, h), (200, 30, 30)), fmt)).decode()


def ok_body(n: int = 1, fmt: str = "png", usage: dict | None = GPT1_USAGE, w: int = 1024, h: int = 1024) -> dict:
    img = b64_image(w, h, fmt)
    return {
        "created": 1713833628,
        "data": [{"b64_json": img}] * n,
        "background": "opaque",
        "output_format": fmt,
        "quality": "high",
        "size": f"{w}x{h}",
        **({"usage": usage} if usage else {}),
    }


def err_body(message: str, type_: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def parts_of(request: httpx.Request) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, payload) of each multipart part, as a server sees them."""
    raw = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.read()
    msg = BytesParser(policy=policy.HTTP).parsebytes(raw)
    return [
        (
            p.get_param("name", header="content-disposition"),
            p.get_filename(),
            p.get("content-type"),
            p.get_payload(decode=True),
        )
        for p in msg.iter_parts()
    ]


class Recorder:
    """A handler that answers from a list (the last answer repeats) and keeps every request."""

    def __init__(self, *answers):
        self.answers = list(answers) or [httpx.Response(200, json=ok_body())]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def fields(self, i: int = -1) -> dict[str, str]:
        return {n: d.decode() for n, f, _, d in parts_of(self.requests[i]) if f is None}


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def make_backend(handler, sleeps: list | None = None, **settings) -> OpenAIEditBackend:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return OpenAIEditBackend("openai", Settings(base_url="https://api.test/v1", **settings), client=client, sleep=sleep)


# ---- the request on the wire ---------------------------------------------------------------------


def test_one_image_goes_as_scalar_image_with_mask(key):
    rec = Recorder()
    make_backend(rec).edit(make_request(mask=True))
    req = rec.requests[0]
    assert req.method == "POST" and str(req.url) == "https://api.test/v1/images/edits"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    files = [(n, f, t) for n, f, t, _ in parts_of(req) if f is not None]
    assert files == [("image", "in0.png", "image/png"), ("mask", "mask.png", "image/png")]
    assert rec.fields() == {
        "model": "gpt-image-2.6-flare",
        "prompt": "paint the masked corner red",
        "n": "1",
        "size": "auto",
        "quality": "auto",
        "output_format": "png",
        "background": "auto",
    }


def test_several_images_go_as_image_array_with_real_content_types(key):
    rec = Recorder()
    images = tuple(InputImage.from_bytes(image_bytes(64, 64, fmt), f"p.{fmt}") for fmt in ("png", "jpeg", "webp"))
    make_backend(rec).edit(make_request(mask=False).__class__(prompt="compose", images=images))
    files = [(n, f, t) for n, f, t, _ in parts_of(rec.requests[0]) if f is not None]
    assert files == [
        ("image[]", "p.png", "image/png"),
        ("image[]", "p.jpeg", "image/jpeg"),
        ("image[]", "p.webp", "image/webp"),
    ]
    assert [d for n, f, _, d in parts_of(rec.requests[0]) if f] == [i.read() for i in images]


@pytest.mark.parametrize("takes", [True, False])
def test_input_fidelity_only_where_the_model_takes_it(takes):
    fields = wire.form_fields(make_request(input_fidelity="high"), "m", takes_input_fidelity=takes)
    body = wire.json_body(make_request(input_fidelity="high"), "m", takes_input_fidelity=takes)
    assert ("input_fidelity" in fields) is takes and ("input_fidelity" in body) is takes
    assert "response_format" not in fields and "response_format" not in body


def test_input_fidelity_on_a_2x_model_refused_before_any_request(key):
    rec = Recorder()
    with pytest.raises(InvalidRequest) as info:
        make_backend(rec, model="gpt-image-2").edit(make_request(input_fidelity="high"))
    assert info.value.field == "input_fidelity" and "does not take input_fidelity" in str(info.value)
    assert rec.requests == []


@pytest.mark.parametrize(("fmt", "comp", "sent"), [("webp", 80, "80"), ("jpeg", 0, "0"), ("png", None, None)])
def test_output_compression_only_for_jpeg_and_webp(key, fmt, comp, sent):
    rec = Recorder(httpx.Response(200, json=ok_body(fmt=fmt)))
    result = make_backend(rec).edit(make_request(output_format=fmt, output_compression=comp))
    assert rec.fields().get("output_compression") == sent
    assert rec.fields()["output_format"] == fmt and result.output_format == fmt


def test_azure_style_key_header_and_api_version(key):
    rec = Recorder()
    make_backend(
        rec,
        auth_style="api-key",
        api_version="2025-04-01-preview",
        organization="org-1",
        project="proj-1",
        extra_headers={"x-gateway": "eu"},
    ).edit(make_request())
    h = rec.requests[0].headers
    assert h["api-key"] == KEY and "authorization" not in h
    assert rec.requests[0].url.params["api-version"] == "2025-04-01-preview"
    assert (h["openai-organization"], h["openai-project"], h["x-gateway"]) == ("org-1", "proj-1", "eu")


def test_key_from_file_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "key").write_text("sk-from-file\n")
    rec = Recorder()
    make_backend(rec, api_key_file=tmp_path / "key").edit(make_request())
    assert rec.requests[0].headers["authorization"] == "Bearer sk-from-file"


def test_missing_key_is_a_config_error_at_edit_time_not_construction(tmp_path):
    rec = Recorder()
    backend = make_backend(rec)  # no key anywhere: still builds, still estimates
    assert backend.estimate(make_request()).usd > 0
    with pytest.raises(BackendMisconfigured, match="OPENAI_API_KEY") as info:
        backend.edit(make_request())
    assert "contract-job" in str(info.value)
    with pytest.raises(BackendMisconfigured, match="nokey"):
        make_backend(rec, api_key_file=tmp_path / "nokey").edit(make_request())
    assert rec.requests == []


def test_repr_never_shows_the_key(key):
    backend = make_backend(Recorder())
    assert KEY not in repr(backend) and KEY not in repr(backend.settings)
    assert KEY not in repr(backend.edit(make_request()))


# ---- parsing and cost ----------------------------------------------------------------------------


def test_result_parsed_and_cost_exact_from_usage(key):
    rec = Recorder(httpx.Response(200, json=ok_body(n=2, w=1536, h=1024)))
    result = make_backend(rec).edit(make_request(n=2))
    # made (and billed) at 1536x1024; size auto is the 64x64 input's own size (THE SIZE RULE, backends.canvas)
    assert len(result.images) == 2 and (result.width, result.height) == (64, 64)
    assert result.extras["resized"].startswith("1536x1024 -> 64x64") and result.extras["pasted_back"] is True
    assert result.usage.input_image_tokens == 194 and result.usage.input_text_tokens == 25
    assert result.usage.output_tokens == 4160 and result.usage.total_tokens == 4379
    # 25 x $5 + 194 x $8 + 4160 x $30 per 1M
    assert result.cost_usd == Decimal("0.126477")
    assert result.quality == "high" and result.model == "gpt-image-2.6-flare" and result.backend == "openai"


def test_output_text_tokens_without_a_rate_of_their_own_are_billed_at_the_image_rate(key):
    usage = {**GPT1_USAGE, "output_tokens": 4200, "output_tokens_details": {"image_tokens": 4160, "text_tokens": 40}}
    rec = Recorder(httpx.Response(200, json=ok_body(usage=usage)))
    result = make_backend(rec).edit(make_request())
    # 25 x $5 + 194 x $8 + 4160 x $30 + 40 text out x $30 (2.6 lists no text-out rate: never billed as free)
    assert result.cost_usd == Decimal("0.127677")
    assert (result.usage.output_image_tokens, result.usage.output_text_tokens) == (4160, 40)


@pytest.mark.parametrize(
    ("details", "cost"),
    [
        # a bare total goes on text first (the smaller discount): 5 x $5 + 20 x $1.25 + 194 x $8 + 4160 x $30
        ({"cached_tokens": 20}, "0.126402"),
        # 25 text cached x $1.25 + 100 image cached x $2 + 94 x $8 + 4160 x $30
        ({"cached_tokens": 125}, "0.12578325"),
        ({"cached_tokens_details": {"text_tokens": 0, "image_tokens": 194}}, "0.125313"),
    ],
)
def test_cached_input_tokens_are_billed_at_the_cached_rates(key, details, cost):
    usage = {**GPT1_USAGE, "input_tokens_details": {**GPT1_USAGE["input_tokens_details"], **details}}
    result = make_backend(Recorder(httpx.Response(200, json=ok_body(usage=usage)))).edit(make_request())
    assert result.cost_usd == Decimal(cost)


def test_missing_usage_falls_back_to_the_estimate_and_says_so(key):
    rec = Recorder(httpx.Response(200, json=ok_body(usage=None)))
    backend = make_backend(rec)
    result = backend.edit(make_request())
    assert result.cost_usd == backend.estimate(make_request()).usd
    assert result.extras["cost_basis"].startswith("estimate")


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"data": [{"url": "https://x"}]},
        {"data": [{"b64_json": "@@"}]},
        {"data": [{"b64_json": base64.b64encode(b"not an image").decode()}]},
    ],
)
def test_broken_200_is_backend_unavailable(key, body):
    with pytest.raises(BackendUnavailable):
        make_backend(Recorder(httpx.Response(200, json=body))).edit(make_request())


# ---- estimate ------------------------------------------------------------------------------------


def test_estimate_gpt_image_2_high_square_from_the_official_table():
    backend = OpenAIEditBackend("openai", Settings(model="gpt-image-2"))
    est = backend.estimate(make_request(quality="high", prompt="x" * 40))
    # 7024 output tokens x $30/1M + 388 input image tokens (2.x rule) x $8/1M + 10 text tokens x $5/1M
    assert est.usd == Decimal("0.213874")
    assert "7024 output tokens" in est.basis and "$30.00/1M" in est.basis and "388 input image tokens" in est.basis
    assert not est.basis.startswith("ESTIMATE")


def test_estimates_for_models_without_a_published_table_say_estimate():
    for model in ("gpt-image-2.6-flare", "gpt-image-2.6-sunburst", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst"):
        est = OpenAIEditBackend("openai", Settings(model=model)).estimate(make_request(quality="medium"))
        assert est.basis.startswith("ESTIMATE: ") and "publishes no output-token table" in est.basis


def test_estimate_auto_quality_size_from_aspect_and_n():
    backend = OpenAIEditBackend("openai", Settings(model="gpt-image-2"))
    wide = InputImage.from_bytes(image_bytes(96, 64), "wide.png")
    est = backend.estimate(make_request(mask=False).__class__(prompt="abcd", images=(wide,), n=3))
    # auto -> high, auto size of a 3:2 input -> 1536x1024 (5488); 96x64 input = 2 tiles: 130 + 2 x 258 = 646
    assert est.usd == (Decimal(3 * 5488 * 30) + Decimal(646 * 8) + Decimal(1 * 5)) / 1_000_000
    assert "3 x 5488 output tokens (high 1536x1024)" in est.basis


def test_estimate_of_remote_inputs_is_conservative_and_says_so(key):
    rec = Recorder()
    backend = make_backend(rec, model="gpt-image-2")
    local = backend.estimate(make_request(mask=False))
    remote = backend.estimate(
        make_request(mask=False).__class__(
            prompt=local.basis[:0] + "paint the masked corner red", images=(InputImage.remote(file_id="file-abc"),)
        )
    )
    assert remote.usd > local.usd and remote.basis.startswith("ESTIMATE")
    assert "unknown size" in remote.basis and "dearest tabled size" in remote.basis
    assert rec.requests == []


# ---- errors and retries --------------------------------------------------------------------------

ERROR_CASES = [
    (
        "moderation",
        httpx.Response(
            400,
            json={
                **err_body(
                    "Your request was rejected by the safety system.",
                    "image_generation_user_error",
                    None,
                    "moderation_blocked",
                ),
                "moderation_details": {"moderation_stage": "input"},
            },
        ),
        ContentRejected,
        1,
        "safety system",
    ),
    (
        "bad param",
        httpx.Response(400, json=err_body("Invalid value: 'huge'.", param="size", code="invalid_value")),
        InvalidRequest,
        1,
        "param size",
    ),
    (
        "bad image",
        httpx.Response(
            400,
            json=err_body(
                "Invalid image file or mode for image 1", "image_generation_user_error", "image", "invalid_image_file"
            ),
        ),
        InvalidRequest,
        1,
        "invalid_image_file",
    ),
    (
        "401",
        httpx.Response(
            401, json=err_body(f"Incorrect API key provided: {KEY[:6]}****{KEY[-4:]}.", code="invalid_api_key")
        ),
        BackendMisconfigured,
        1,
        "$OPENAI_API_KEY",
    ),
    (
        "403",
        httpx.Response(403, json=err_body("Your organization must be verified to use the model `gpt-image-1`.")),
        BackendMisconfigured,
        1,
        "must be verified",
    ),
    (
        "404",
        httpx.Response(404, json=err_body("The model does not exist", code="model_not_found")),
        BackendMisconfigured,
        1,
        "model_not_found",
    ),
    (
        "400 model_not_found",
        httpx.Response(
            400, json=err_body("The model `gpt-image-2.6-flare` has been deprecated", code="model_not_found")
        ),
        BackendMisconfigured,
        1,
        "does not know this model",
    ),
    (
        "quota",
        httpx.Response(
            429, json=err_body("You exceeded your current quota", "insufficient_quota", code="insufficient_quota")
        ),
        BackendMisconfigured,
        1,
        "quota",
    ),
    (
        "429",
        httpx.Response(
            429,
            headers={"retry-after-ms": "250"},
            json=err_body("Rate limit reached", "requests", code="rate_limit_exceeded"),
        ),
        RateLimited,
        3,
        "Rate limit reached",
    ),
    (
        "500",
        httpx.Response(500, json=err_body("The server had an error", "server_error")),
        BackendUnavailable,
        3,
        "server error",
    ),
    ("502 html", httpx.Response(502, text="<html>Bad gateway</html>"), BackendUnavailable, 3, "Bad gateway"),
    ("connect", httpx.ConnectError("connection refused"), BackendUnavailable, 3, "ConnectError"),
    ("timeout", httpx.ReadTimeout("read timed out"), OutcomeUnknown, 3, "may have been billed"),
]


@pytest.mark.parametrize(
    ("answer", "exc_type", "attempts", "text"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors_map_to_the_tree_after_the_right_number_of_attempts(key, answer, exc_type, attempts, text):
    rec = Recorder(answer)
    with pytest.raises(exc_type) as info:
        make_backend(rec).edit(make_request())
    assert type(info.value) is exc_type
    assert len(rec.requests) == attempts
    message = str(info.value)
    assert text in message and "contract-job" in message and "'openai'" in message
    assert KEY not in message and KEY[:6] not in message


def test_rate_limited_carries_retry_after_and_retries_wait_that_long(key):
    sleeps: list[float] = []
    rec = Recorder(httpx.Response(429, headers={"retry-after-ms": "250"}, json=err_body("slow", "requests")))
    with pytest.raises(RateLimited) as info:
        make_backend(rec, sleeps).edit(make_request())
    assert info.value.retry_after == 0.25 and sleeps == [0.25, 0.25]


def test_retry_after_then_success(key):
    sleeps: list[float] = []
    rec = Recorder(
        httpx.Response(429, headers={"retry-after": "2"}, json=err_body("slow", "requests")),
        httpx.Response(503, json=err_body("overloaded", "server_error")),
        httpx.Response(200, json=ok_body()),
    )
    result = make_backend(rec, sleeps).edit(make_request())
    assert len(rec.requests) == 3 and result.extras["attempts"] == 3
    assert sleeps[0] == 2.0 and 0.75 <= sleeps[1] <= 1.0  # server's wait, then 1 s backoff minus jitter
    assert [r.headers["x-stainless-retry-count"] for r in rec.requests] == ["0", "1", "2"]


def test_backoff_doubles_to_a_cap_with_jitter():
    assert [wire.backoff_delay(a, rand=lambda: 0.0) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert wire.backoff_delay(1, rand=lambda: 1.0) == 0.75


def test_retry_after_forms():
    assert wire.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert wire.retry_after({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < wire.retry_after({"retry-after": date}) <= 30
    assert wire.retry_after({}) is None


def test_long_retry_after_is_not_slept_through(key):
    sleeps: list[float] = []
    rec = Recorder(httpx.Response(429, headers={"retry-after": "300"}, json=err_body("slow", "requests")))
    with pytest.raises(RateLimited) as info:
        make_backend(rec, sleeps).edit(make_request())
    assert info.value.retry_after == 300 and len(rec.requests) == 1 and sleeps == []


def test_max_retries_zero_means_one_attempt(key):
    rec = Recorder(httpx.Response(500, json=err_body("boom", "server_error")))
    with pytest.raises(BackendUnavailable):
        make_backend(rec, max_retries=0).edit(make_request())
    assert len(rec.requests) == 1


def test_bad_base_url_is_a_config_error(key):
    backend = OpenAIEditBackend("openai", Settings(base_url="ftp://nowhere/v1"))
    with pytest.raises(BackendMisconfigured, match="base_url"):
        backend.edit(make_request())


def test_bad_settings_and_unknown_model_are_config_errors():
    with pytest.raises(BackendMisconfigured, match="max_retries"):
        OpenAIEditBackend.from_settings("openai", {"max_retries": -1})
    with pytest.raises(BackendMisconfigured, match="api_key: Extra inputs are not permitted") as info:
        OpenAIEditBackend.from_settings("openai", {"api_key": "sk-inline"})  # keys never go in settings
    assert "sk-inline" not in str(info.value)
    with pytest.raises(BackendMisconfigured, match="gpt-image-9.*rates:"):
        OpenAIEditBackend.from_settings("openai", {"model": "gpt-image-9"})


def test_capabilities_follow_the_model():
    two, flare, sun25 = (
        OpenAIEditBackend("a", Settings(model=m)).capabilities
        for m in ("gpt-image-2", "gpt-image-2.6-flare", "gpt-image-2.5-sunburst")
    )
    assert two.arbitrary_sizes and not two.transparent_background and not two.complexity and not two.markup
    assert not flare.arbitrary_sizes and flare.complexity and flare.markup and "gif" in flare.formats
    assert flare.qualities == {"low", "medium", "high", "auto"} and {"xhigh", "max"} <= sun25.qualities
    assert not any(c.input_fidelity for c in (two, flare, sun25)) and all(c.remote_refs for c in (two, flare, sun25))
    assert (flare.max_images, flare.max_n, flare.mask_optional) == (16, 10, True)


def test_unverified_features_are_one_opt_in_per_backend():
    caps = OpenAIEditBackend(
        "a", Settings(model="gpt-image-2.6-sunburst", unverified_features=("xhigh_max", "arbitrary_sizes"))
    ).capabilities
    assert {"xhigh", "max"} <= caps.qualities and caps.arbitrary_sizes
    with pytest.raises(BackendMisconfigured, match="complexity not offered for 'gpt-image-2.6-sunburst'"):
        OpenAIEditBackend.from_settings("a", {"model": "gpt-image-2.6-sunburst", "unverified_features": ["complexity"]})


def test_retired_models_are_refused_at_build_naming_date_and_replacement():
    with pytest.raises(BackendMisconfigured) as info:
        OpenAIEditBackend.from_settings("api", {"model": "gpt-image-1"})
    assert (
        "2026-10-23" in str(info.value) and "gpt-image-2.5-sunburst" in str(info.value) and "'api'" in str(info.value)
    )
    for model in ("gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"):
        with pytest.raises(BackendMisconfigured, match="2026-12-01.*gpt-image-2.6-sunburst"):
            OpenAIEditBackend.from_settings("api", {"model": model})


def test_deprecated_model_warns_with_its_date(caplog):
    from backends.pricing import load_prices

    table = load_prices()
    entry = table.models["gpt-image-2"].model_copy(update={"status": "deprecated", "shutdown": "2027-04-21"})
    prices = table.model_copy(update={"models": {**table.models, "gpt-image-2": entry}})
    OpenAIEditBackend("a", Settings(model="gpt-image-2"), prices=prices)
    assert "shuts down on 2027-04-21" in caplog.text


def test_a_new_model_is_usage_priced_at_the_policys_rates_never_free(key):
    rates = {"text_in": "4", "image_in": "6", "image_out": "20"}
    rec = Recorder(httpx.Response(200, json=ok_body()))
    backend = make_backend(rec, model="gpt-image-3-preview", rates=rates)
    result = backend.edit(make_request())
    assert rec.fields()["model"] == "gpt-image-3-preview"
    assert result.cost_usd == (Decimal(25 * 4) + Decimal(194 * 6) + Decimal(4160 * 20)) / 1_000_000
    assert backend.estimate(make_request()).basis.startswith("ESTIMATE")
    with pytest.raises(BackendMisconfigured, match="image_out"):
        OpenAIEditBackend.from_settings("a", {"model": "gpt-image-3", "rates": {"text_in": 4, "image_in": 6}})
    with pytest.raises(BackendMisconfigured, match="greater than 0"):
        OpenAIEditBackend.from_settings("a", {"model": "gpt-image-3", "rates": {**rates, "image_out": 0}})


def test_result_format_is_what_the_bytes_are(key):
    rec = Recorder(httpx.Response(200, json={**ok_body(fmt="png"), "output_format": "webp"}))
    result = make_backend(rec).edit(make_request(output_format="webp"))
    assert result.output_format == "png"  # a gateway that ignored output_format: files get the right suffix


def test_sse_decoder_gives_the_same_events_however_the_bytes_are_chunked():
    """CRLF, LF and lone CR line ends, comments and multi-line data, split at every chunk size (a CRLF cut between
    its two bytes included): the same events each time."""
    from backends.openai.stream import Event, SSEDecoder

    wire_bytes = (
        b': keep-alive\r\nevent: image_edit.partial_image\r\ndata: {"a": 1}\r\n\r\n'
        b"event: two\ndata: x\ndata: y\n\n"
        b"data: lone-cr\r\r"
        b"event: image_edit.completed\r\ndata: " + b"Q" * 5000 + b"\r\n\r\n"
    )
    expected = [
        Event("image_edit.partial_image", '{"a": 1}'),
        Event("two", "x\ny"),
        Event("", "lone-cr"),
        Event("image_edit.completed", "Q" * 5000),
    ]
    for size in (1, 2, 3, 7, 64, 4096, len(wire_bytes)):
        decoder = SSEDecoder()
        events = [e for i in range(0, len(wire_bytes), size) for e in decoder.feed(wire_bytes[i : i + size])]
        assert events == expected, size
