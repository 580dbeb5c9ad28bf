"""`editroute serve` routes OpenAI-style requests to Gemini and Firefly backends like any other: OpenAI's own SDK as
the client, uvicorn on 127.0.0.1, the Gemini and Firefly loopback stand-ins behind the router. Nothing in serve
knows these kinds: this proves it is generic over backends."""

from __future__ import annotations

import base64
import contextlib
import io
from decimal import Decimal

import pytest
import yaml
from openai import OpenAI
from PIL import Image

from backends.standins.firefly_server import FakeFireflyServer
from backends.standins.gemini_server import FakeGeminiServer
from pipeline.serve import ServeConfig, build, running
from tests.imagery import image_bytes, mask_bytes

KEY = "er-hosted-serve-key-0123456789"
GKEY, CID, SECRET = "AIza-serve-SECRET-9a8b7c", "ff-serve-client", "ff-serve-SECRET-6d5e4f"


def _policy(folder, g, ff, **extra) -> dict:
    return {
        "backends": {
            "gemini-draft": {
                "kind": "gemini",
                "base_url": g.base_url,
                "api_key_file": str(folder / "gemini.key"),
                "max_retries": 0,
            },
            "firefly": {
                "kind": "firefly",
                "base_url": ff.base_url,
                "token_url": ff.token_url,
                "client_id_file": str(folder / "ff.id"),
                "client_secret_file": str(folder / "ff.secret"),
                "price_per_operation_usd": "0.06",
                "poll_interval_s": 0.02,
                "requests_per_minute": None,
            },
        },
        "quality": {"gemini-draft": 0.72, "firefly": 0.8},
        "objective": {"type": "cheapest"},
        **extra,
    }


@contextlib.contextmanager
def serving(folder, **extra):
    secrets = {"gemini.key": GKEY, "ff.id": CID, "ff.secret": SECRET}  # files: the suite strips env per test
    for name, value in secrets.items():
        (folder / name).write_text(value)
    with FakeGeminiServer(api_key=GKEY) as g, FakeFireflyServer(client_id=CID, client_secret=SECRET) as ff:
        path = folder / "policy.yaml"
        path.write_text(yaml.safe_dump(_policy(folder, g, ff, **extra)))
        app, service, _ = build(ServeConfig(policy=path, out_dir=folder / "out"), env={"EDITROUTE_API_KEYS": KEY})
        with running(app) as url:
            yield OpenAI(base_url=url, api_key=KEY, max_retries=0), service, g, ff


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("hosted-serve")) as s:
        yield s


def image(w: int = 160, h: int = 128) -> tuple[str, bytes, str]:
    return ("photo.png", image_bytes(w, h), "image/png")


def sizes(result) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size for d in result.data]


def test_auto_routes_a_masked_n3_request_to_gemini_as_three_billed_calls(stack):
    sdk, service, g, _ = stack
    before = len(g.calls)
    raw = sdk.images.with_raw_response.edit(
        image=image(), mask=("mask.png", mask_bytes(160, 128), "image/png"), prompt="a red armchair", n=3
    )
    result, headers = raw.parse(), raw.headers
    assert headers["x-editroute-backend"] == "gemini-draft" and len(g.calls) == before + 3
    assert len(result.data) == 3 and sizes(result) == [(160, 128)] * 3  # size auto: the input's own
    assert result.usage.output_tokens > 0
    assert service.wait_idle()  # the answer comes before the ledger row is written
    rec = service.ledger.get(headers["x-editroute-job-id"])
    assert rec.status == "done" and rec.cost == Decimal(headers["x-editroute-cost-usd"]) > 0


def test_a_backend_name_as_model_pins_firefly(stack):
    sdk, service, _, ff = stack
    raw = sdk.images.with_raw_response.edit(
        model="firefly", image=image(), mask=("mask.png", mask_bytes(160, 128), "image/png"), prompt="a lamp"
    )
    result, headers = raw.parse(), raw.headers
    assert headers["x-editroute-backend"] == "firefly" and len(ff.submits()) >= 1
    assert sizes(result) == [(160, 128)] and Decimal(headers["x-editroute-cost-usd"]) == Decimal("0.06")


def test_a_gemini_safety_block_is_an_openai_style_content_policy_error(stack):
    import openai

    sdk, _, _, _ = stack
    with pytest.raises(openai.BadRequestError) as err:
        sdk.images.edit(model="gemini-draft", image=image(), prompt="block-prompt please")
    assert err.value.status_code == 400 and "blocked" in str(err.value).lower()


def test_no_secret_reaches_a_response(stack):
    sdk, _, _, _ = stack
    raw = sdk.images.with_raw_response.edit(image=image(), prompt="make it dusk")
    text = raw.http_response.text + str(dict(raw.headers))
    assert GKEY not in text and SECRET not in text


def test_a_policy_that_falls_back_on_rejected_content_does_so_behind_the_server_too(tmp_path):
    """`fallback_on_rejected: true` means the same under `serve` as under `run`: Gemini's safety block sends the
    request on to the policy's fallback, and the client gets Firefly's image (both calls in the ledger)."""
    extra = {"fallback_on_rejected": True, "fallbacks": {"gemini-draft": ["firefly"]}}
    with serving(tmp_path, **extra) as (sdk, service, g, ff):
        raw = sdk.images.with_raw_response.edit(model="auto", image=image(), prompt="block-prompt please")
        assert raw.headers["x-editroute-backend"] == "firefly" and len(raw.parse().data) == 1
        assert service.wait_idle()
        tries = [a["backend"] for a in service.ledger.attempts(raw.headers["x-editroute-job-id"])]
    assert tries == ["gemini-draft", "firefly"]
