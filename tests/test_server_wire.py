"""The server's pure wire functions: OpenAI form parsing, error mapping, metrics text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.serve import ApiError, Form, Metrics, Upload, error_for_outcome, images_response, parse_form
from tests.imagery import image_bytes, mask_bytes


def form(fields: dict[str, str] | None = None, files: list[Upload] | None = None) -> Form:
    f = Form(fields={k: [v] for k, v in (fields or {"prompt": "edit"}).items()})
    f.files = files if files is not None else [Upload("image", image_bytes(), "a.png", "image/png")]
    return f


def refusal(f: Form) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_form(f)
    return info.value


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
        },
        [
            Upload("image[]", image_bytes(), "a.png", "image/png"),
            Upload("image[]", image_bytes(32, 32, "webp"), "b.webp", "application/octet-stream"),
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
    assert [i.format for i in r.images] == ["png", "webp"] and r.mask is not None and r.user == "u1"
    assert parsed.model is None and parsed.tags == ("product", "ecommerce")


@pytest.mark.parametrize(
    "f, param, code",
    [
        (form(files=[Upload("image", image_bytes(), "a.png")] * 2), "image", "duplicate_parameter"),
        (
            form(files=[Upload("image", image_bytes(), "a.png"), Upload("image[]", image_bytes(), "b.png")]),
            "image",
            "duplicate_parameter",
        ),
        (form(files=[]), "image", "missing_required_parameter"),
        (form({"model": "auto"}), "prompt", "missing_required_parameter"),
        (form({"prompt": "p", "stream": "true"}), "stream", "unsupported_value"),
        (form({"prompt": "p", "n": "three"}), "n", "invalid_type"),
        (form({"prompt": "p", "n": "0"}), "n", "invalid_value"),
        (
            form({"prompt": "p", "output_format": "png", "output_compression": "50"}),
            "output_compression",
            "invalid_value",
        ),
        (form({"prompt": "p", "background": "transparent", "output_format": "jpeg"}), "background", "invalid_value"),
        (form({"prompt": "p", "mask": "not a file"}), "mask", "invalid_type"),
    ],
)
def test_refusals_name_the_parameter_like_openai(f, param, code):
    err = refusal(f)
    assert (err.status, err.param, err.code) == (400, param, code)
    assert err.body() == {
        "error": {"message": err.message, "type": "invalid_request_error", "param": param, "code": code}
    }
    assert err.headers() == {"x-should-retry": "false"}


def test_outcome_errors_map_to_openai_status_codes_and_retry_hints():
    rate = error_for_outcome("RateLimited", "slow down")
    assert rate.status == 429 and rate.headers() == {"x-should-retry": "true", "retry-after": "2"}
    budget = error_for_outcome("BudgetExceeded", "budget spent")
    assert budget.status == 429 and budget.code == "insufficient_quota"
    assert budget.headers()["x-should-retry"] == "false"
    held = error_for_outcome("Unroutable", "no backend may run this job: ... job held", budget_held=True)
    assert held.status == 429 and held.headers()["x-should-retry"] == "false"
    assert error_for_outcome("Unroutable", "cannot", param="mask").param == "mask"
    assert error_for_outcome("BackendUnavailable", "down").status == 503
    moderation = error_for_outcome("ContentRejected", "rejected by the safety system")
    assert (moderation.status, moderation.type, moderation.code) == (
        400,
        "image_generation_user_error",
        "moderation_blocked",
    )
    assert error_for_outcome("Busy", "running elsewhere").status == 409
    assert error_for_outcome("OutputError", "disk full").status == 500


def test_images_response_maps_usage_to_openais_fields():
    body = images_response(
        {
            "background": "opaque",
            "output_format": "png",
            "quality": "high",
            "size": "1024x1024",
            "usage": {
                "input_tokens": 200,
                "input_text_tokens": 6,
                "input_image_tokens": 194,
                "output_tokens": 4160,
                "total_tokens": 4360,
                "gpu_seconds": 0.0,
            },
        },
        [b"\x89PNG"],
        created=5,
    )
    assert body["created"] == 5 and body["data"] == [{"b64_json": "iVBORw=="}]
    assert body["usage"] == {
        "input_tokens": 200,
        "input_tokens_details": {"text_tokens": 6, "image_tokens": 194},
        "output_tokens": 4160,
        "total_tokens": 4360,
    }


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
