"""The server's pure wire functions: both encodings parsed with OpenAI's codes, images probed from their headers,
errors mapped (a provider's own answer passed on whole), the answer's JSON and events, metrics text."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from decimal import Decimal

import pytest

from backends.errors import InvalidRequest, RateLimited
from backends.openai.wire import map_status_error
from pipeline.serve import (
    ApiError,
    Form,
    Limits,
    Metrics,
    Upload,
    error_for_outcome,
    images_response,
    parse_form,
    parse_json,
)
from pipeline.serve.probe import probe_image
from pipeline.serve.upload import read_form
from pipeline.serve.wire import completed_event, error_for_invalid, partial_event, sse
from tests.imagery import image_bytes, mask_bytes


def form(fields: dict[str, str] | None = None, files: list[Upload] | None = None) -> Form:
    f = Form(fields={k: [v] for k, v in (fields or {"prompt": "edit"}).items()})
    f.files = files if files is not None else [Upload("image", image_bytes(), "a.png", "image/png")]
    return f


def refusal(f: Form | dict) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_form(f) if isinstance(f, Form) else parse_json(f)
    return info.value


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`x`height` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def one(data: bytes, ctype: str | None = "image/png", name: str = "image") -> Form:
    """A form with one image part."""
    return form(files=[Upload(name, data, "a.png", ctype)])


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_a_full_form_becomes_the_edit_request():
    f = form(
        {
            "prompt": "p",
            "n": "3",
            "size": "1024x1024",
            "quality": "low",
            "output_format": "webp",
            "output_compression": "40",
            "background": "opaque",
            "input_fidelity": "high",
            "user": "u1",
            "model": "auto",
            "seed": "9",
            "tags": "product, ecommerce",
            "stream": "false",
            "complexity": "low",
            "moderation": "low",
            "safety_identifier": "user-hash",
        },
        [
            Upload("image[]", image_bytes(), "a.png", "image/png"),
            Upload("image[]", image_bytes(32, 32, "webp"), "b.webp", "image/webp"),
            Upload("mask", mask_bytes(), "m.png", "image/png"),
        ],
    )
    parsed = parse_form(f)
    r = parsed.request
    assert (r.n, r.size, r.quality, r.output_format, r.output_compression, r.seed) == (
        3,
        "1024x1024",
        "low",
        "webp",
        40,
        9,
    )
    assert (r.complexity, r.moderation, r.safety_identifier, r.partial_images) == ("low", "low", "user-hash", None)
    assert [i.format for i in r.images] == ["png", "webp"] and r.mask is not None and r.user == "u1"
    assert parsed.model is None and parsed.tags == ("product", "ecommerce")


def test_the_json_body_takes_data_urls_file_ids_and_https_urls_as_references():
    body = {
        "prompt": "p",
        "images": [{"image_url": data_url(image_bytes())}, {"file_id": "file-abc123"}],
        "mask": {"image_url": data_url(mask_bytes())},
        "n": 1,
        "stream": True,
        "partial_images": 2,
        "tags": ["a", "b"],
    }
    parsed = parse_json(body)
    r = parsed.request
    assert r.images[0].format == "png" and r.images[0].data is not None and r.images[1].file_id == "file-abc123"
    assert r.partial_images == 2 and parsed.stream and parsed.tags == ("a", "b")
    remote = parse_json({"prompt": "p", "images": [{"image_url": "https://example.com/p.png"}]}).request.images[0]
    assert remote.url == "https://example.com/p.png" and remote.data is None  # fetching is off: the provider's


def test_bracketed_fields_nest_as_the_sdk_writes_them():
    f = form({"prompt": "p", "tags[]": "x"})
    f.fields["tags[]"] = ["x", "y"]
    assert parse_form(f).tags == ("x", "y")
    assert refusal(form({"prompt": "p", "svg[model]": "gpt-5.4-mini"})).param == "svg"  # only with svg output
    err = refusal(form({"prompt": "p", "svg[color]": "red"}))
    assert (err.param, err.code) == ("svg.color", "unknown_parameter")
    err = refusal(form({"prompt": "p", "svg[reasoning][effort]": "huge"}))
    assert (err.param, err.code) == ("svg.reasoning.effort", "invalid_value")
    err = refusal(form({"prompt": "p", "foo[bar]": "1"}))
    assert (err.param, err.code) == ("foo", "unknown_parameter")
    err = refusal(form({"prompt": "p", "n[x]": "1"}))
    assert (err.param, err.code) == ("n", "invalid_type")
    err = refusal(form({"prompt": "p", "output_format": "svg", "svg[model]": "gpt-5.4-mini"}))
    assert (err.param, err.code) == ("output_format", "unsupported_value")


DUP, MIME = "duplicate_parameter", "unsupported_file_mimetype"


@pytest.mark.parametrize(
    "f, param, code",
    [
        (form(files=[Upload("image", image_bytes(), "a.png", "image/png")] * 2), "image", "duplicate_parameter"),
        (form(files=[*one(image_bytes()).files, *one(image_bytes(), name="image[]").files]), "image", DUP),
        (form(files=[]), "image", "missing_required_parameter"),
        (form({"model": "auto"}), "prompt", "missing_required_parameter"),
        (form({"prompt": ""}), "prompt", "empty_string"),
        (form({"prompt": "x" * 32_001}), "prompt", "string_above_max_length"),
        (form({"prompt": "é" * 32_001}), "prompt", "string_above_max_length"),
        (form({"prompt": "p", "n": "three"}), "n", "invalid_type"),
        (form({"prompt": "p", "n": "0"}), "n", "integer_below_min_value"),
        (form({"prompt": "p", "n": "11"}), "n", "integer_above_max_value"),
        (form({"prompt": "p", "partial_images": "4", "stream": "true"}), "partial_images", "integer_above_max_value"),
        (form({"prompt": "p", "quality": "ultra"}), "quality", "invalid_value"),
        (form({"prompt": "p", "stream": "maybe"}), "stream", "invalid_type"),
        (form({"prompt": "p", "stream": "true", "n": "2"}), "n", "unsupported_value"),
        (form({"prompt": "p", "response_format": "b64_json"}), "response_format", "unknown_parameter"),
        (form({"prompt": "p", "output_compression": "50"}), "output_compression", "invalid_value"),
        (form({"prompt": "p", "background": "transparent", "output_format": "jpeg"}), "background", "invalid_value"),
        (form({"prompt": "p", "mask": "not a file"}), "mask", "invalid_type"),
        (one(image_bytes(), None), "image", "missing_file_mimetype"),
        (one(image_bytes(), "application/octet-stream"), "image", "unsupported_file_mimetype"),
        (one(png_claiming(20_000, 20_000)), "image", "invalid_image_file"),
        (one(image_bytes()[:-20]), "image", "invalid_image_file"),
        (one(image_bytes(64, 64, "jpeg")[:300], "image/jpeg"), "image", "invalid_image_file"),
        (one(b"GIF89a" + b"\0" * 50), "image", "invalid_image_file"),
        ({"prompt": "p"}, "images", "missing_required_parameter"),
        ({"prompt": "p", "images": []}, "images", "empty_array"),
        ({"prompt": "p", "images": [{"image_url": "http://a.test/a.png"}]}, "images[0].image_url", "invalid_value"),
        ({"prompt": "p", "images": [{"image_url": "x", "file_id": "file-1"}]}, "images[0]", "invalid_value"),
        ({"prompt": "p", "images": [{"image_url": data_url(b"GIF8", "image/gif")}]}, "images[0]", MIME),
        ({"prompt": "p", "images": [{"file_id": "file-1"}], "n": "2"}, "n", "invalid_type"),
        ({"prompt": "p", "images": [{"file_id": "file-1"}], "stream": "yes"}, "stream", "invalid_type"),
        ({"prompt": "p", "images": [{"file_id": "file-1"}]} | {"image": "x"}, "image", "unknown_parameter"),
        ({"prompt": "p", "images": [{"file_id": "file-1"}] * 17}, "images", "array_above_max_length"),
    ],
)  # fmt: skip
def test_refusals_name_the_parameter_like_openai(f, param, code):
    err = refusal(f)
    assert (err.status, err.param, err.code) == (400, param, code)
    kind = "image_generation_user_error" if code == "invalid_image_file" else "invalid_request_error"
    assert err.body() == {"error": {"message": err.message, "type": kind, "param": param, "code": code}}
    assert err.headers() == {"x-should-retry": "false"} and " object at 0x" not in err.message


def test_a_too_long_prompt_has_one_code_whatever_its_characters():
    """ASCII, two-byte and four-byte characters: the same code and the real length, whether the prompt was cut off
    while it streamed in (over 4 bytes a character) or checked whole."""
    import asyncio

    limits = Limits()
    boundary = "b0undary"

    def body(prompt: str) -> bytes:
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
            + prompt.encode()
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + image_bytes()
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        return b"".join(parts)

    async def chunks(data: bytes):
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    for ch in ("x", "é", "😀"):
        data = body(ch * 32_001)
        with pytest.raises(ApiError) as info:
            f = asyncio.run(read_form(chunks(data), f"multipart/form-data; boundary={boundary}", None, limits))
            parse_form(f, limits)
        err = info.value
        assert (err.param, err.code) == ("prompt", "string_above_max_length"), ch
        assert "got a string with length 32001 instead" in err.message


def test_probe_reads_headers_only_and_keeps_the_facts():
    img = probe_image(image_bytes(40, 30, "webp"), param="image", name="a.webp", max_pixels=10_000)
    assert (img.format, img.width, img.height, img.data is not None) == ("webp", 40, 30, True)
    alpha = probe_image(mask_bytes(), param="mask", name="m.png", max_pixels=10_000)
    assert alpha.has_alpha and alpha.format == "png"
    with pytest.raises(ApiError) as info:
        probe_image(image_bytes(200, 200), param="image[2]", name="big.png", max_pixels=10_000)
    assert info.value.param == "image[2]" and "200x200 = 40,000 pixels, above the limit of 10,000" in info.value.message


def test_an_upstream_error_is_passed_on_whole():
    body = {
        "error": {
            "message": "Your request was rejected by the safety system. key sk-abcdef123456 leaked",
            "type": "image_generation_user_error",
            "param": None,
            "code": "moderation_blocked",
            "moderation_details": {"moderation_stage": "input", "categories": ["violence"]},
        }
    }
    err = map_status_error(400, {"x-request-id": "req_1"}, body, key_source="$KEY", secret="sk-abcdef123456")
    api = error_for_outcome(type(err).__name__, str(err), detail=err)
    assert api.status == 400 and api.code == "moderation_blocked" and api.type == "image_generation_user_error"
    sent = api.body()["error"]
    assert sent["moderation_details"] == {"moderation_stage": "input", "categories": ["violence"]}
    assert sent["message"].startswith("Your request was rejected") and "sk-abcdef123456" not in sent["message"]
    limited = map_status_error(
        429,
        {"retry-after": "5", "retry-after-ms": "5000", "x-ratelimit-remaining-requests": "0", "x-other": "no"},
        {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
        key_source="$KEY",
    )
    assert isinstance(limited, RateLimited)
    api = error_for_outcome("RateLimited", str(limited), detail=limited)
    assert api.status == 429 and api.body()["error"]["message"] == "Rate limit reached"
    assert api.headers() == {"retry-after": "5", "retry-after-ms": "5000", "x-ratelimit-remaining-requests": "0"}
    bad_param = map_status_error(
        400, {}, {"error": {"message": "Invalid size", "type": "invalid_request_error", "param": "size", "code": "x"}},
        key_source="$KEY",
    )  # fmt: skip
    api = error_for_outcome("InvalidRequest", str(bad_param), detail=bad_param)
    assert (api.param, api.code, api.message) == ("size", "x", "Invalid size")
    ours = map_status_error(401, {}, {"error": {"message": "Incorrect API key"}}, key_source="$KEY")
    assert error_for_outcome("BackendMisconfigured", str(ours), detail=ours).status == 502  # our key, not theirs


def test_outcome_errors_without_a_provider_answer():
    rate = error_for_outcome("RateLimited", "slow down", detail=RateLimited("slow down", retry_after=7))
    assert rate.status == 429 and rate.headers() == {"x-should-retry": "true", "retry-after": "7"}
    budget = error_for_outcome("BudgetExceeded", "budget spent")
    assert budget.status == 429 and budget.code == "insufficient_quota"
    held = error_for_outcome("Unroutable", "no backend may run this job: ... job held", budget_held=True)
    assert held.status == 429 and held.headers()["x-should-retry"] == "false"
    assert error_for_outcome("BackendUnavailable", "down").status == 503
    assert error_for_outcome("Busy", "running elsewhere").status == 409
    assert error_for_outcome("OutputError", "disk full <object object at 0x7f00aa>").message == "disk full <object>"
    cap = error_for_invalid(InvalidRequest("x", field="stream"), capability=True, model="gpt-image-2")
    assert (cap.param, cap.code) == ("stream", "unsupported_value")
    cap = error_for_invalid(InvalidRequest("x", field="input_fidelity"), capability=True, model="gpt-image-2")
    assert (cap.type, cap.code) == ("image_generation_user_error", "invalid_input_fidelity_model")


def test_images_response_and_events_pass_usage_whole():
    provider_usage = {
        "input_tokens": 371,
        "input_tokens_details": {"image_tokens": 352, "text_tokens": 19},
        "output_tokens": 439,
        "output_tokens_details": {"image_tokens": 439, "text_tokens": 0},
        "total_tokens": 810,
    }
    record = {
        "background": "opaque",
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
        "usage": {"input_tokens": 371, "output_tokens": 439, "total_tokens": 810},
        "extras": {"openai_usage": provider_usage},
    }
    body = json.loads(images_response(record, [b"\x89PNG"], created=5))
    assert body["created"] == 5 and body["data"] == [{"b64_json": "iVBORw=="}] and body["usage"] == provider_usage
    own = json.loads(images_response({"usage": {"input_tokens": 2, "output_image_tokens": 5, "output_tokens": 5}}, []))
    assert own["usage"]["output_tokens_details"] == {"image_tokens": 5, "text_tokens": 0}
    done = completed_event(b"\x89PNG", record, created_at=9)
    assert done["type"] == "image_edit.completed" and done["usage"] == provider_usage and done["b64_json"] == "iVBORw=="
    part = partial_event(b"\x89PNG", 1, record, created_at=9)
    assert part["partial_image_index"] == 1 and part["type"] == "image_edit.partial_image"
    event = sse(part).decode()
    assert event.startswith("event: image_edit.partial_image\ndata: {") and event.endswith("}\n\n")


def test_metrics_text_format():
    m = Metrics()
    m.job("sdxl", "done", seconds=0.3, cost=Decimal("0.0012"))
    m.job('we"ird', "failed", seconds=20.0, error_class="BackendUnavailable")
    text = m.render({"sdxl": Decimal("1.5")})
    assert 'editroute_jobs_total{backend="sdxl",status="done"} 1' in text
    assert 'editroute_job_failures_total{backend="we\\"ird",error_class="BackendUnavailable"} 1' in text
    assert 'editroute_job_latency_seconds_bucket{backend="sdxl",le="0.5"} 1' in text
    assert 'editroute_job_latency_seconds_bucket{backend="sdxl",le="0.25"} 0' in text
    assert 'editroute_spend_usd_total{backend="sdxl"} 0.0012' in text
    assert 'editroute_ledger_spend_usd{backend="sdxl"} 1.5' in text and text.endswith("\n")
