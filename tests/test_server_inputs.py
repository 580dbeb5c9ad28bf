"""Issue 13, items 1, 4 and 7, with the official SDK against `editroute serve` on loopback: every input fault is a
400 in OpenAI's envelope naming the field, checked before any pixel is decoded, and the connection stays usable;
errors and usage as OpenAI sends them; both encodings (multipart and JSON), bracketed `extra_body` fields."""

from __future__ import annotations

import base64
import struct
import zlib

import httpx
import openai
import pytest
from openai.types import ImagesResponse

from backends.standins import FakeOpenAIServer
from backends.standins.openai_files import add_file
from pipeline.serve import Limits, ServeSettings
from tests.imagery import image_bytes, mask_bytes
from tests.serve_helpers import UPSTREAM_KEY, client, png, serving, write_policy

EDITS = ("route", "/v1/images/edits")


def png_claiming(width: int, height: int) -> bytes:
    """A 68-byte PNG whose header claims `width`x`height`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, cached_tokens=5, remote_images={}) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream):
    folder = tmp_path_factory.mktemp("inputs")
    with serving(write_policy(folder, upstream), folder / "out") as (url, service):
        yield url, service


def count(service, code: int) -> int:
    return service.metrics.requests.get((EDITS, ("code", str(code))), 0)


# ---- item 1: input faults, before any decode, connection usable ---------------------------------------------


@pytest.mark.parametrize(
    "image, why",
    [
        (png_claiming(20_000, 20_000), "20000x20000 = 400,000,000 pixels, above the limit"),  # Pillow: bomb error
        (png_claiming(9_000, 9_000), "9000x9000 = 81,000,000 pixels, above the limit"),  # Pillow: only a warning
        (image_bytes(256, 256)[:-30], "truncated or corrupt"),
        (image_bytes(256, 256, "jpeg")[:-200], "the JPEG is truncated"),
        (image_bytes(256, 256, "jpeg")[:300], "its JPEG header cannot be read"),
        (b"not an image at all", "not a PNG, JPEG or WebP"),
    ],
)
def test_a_bad_image_is_a_400_naming_the_field_and_the_same_client_goes_on(server, upstream, image, why):
    url, service = server
    sdk = client(url, max_retries=2)
    before, calls = count(service, 400), len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.images.edit(image=("photo.png", image, "image/png"), prompt="edit")
    err = info.value
    assert (err.status_code, err.param, err.code, err.type) == (
        400,
        "image",
        "invalid_image_file",
        "image_generation_user_error",
    )
    assert why in err.body["message"] and " object at 0x" not in err.body["message"]
    assert (
        err.response.headers["content-type"] == "application/json" and err.response.headers["x-should-retry"] == "false"
    )
    assert count(service, 400) == before + 1 and len(upstream.requests) == calls  # not retried, nothing spent
    result = sdk.images.edit(image=png(), prompt="the next request on the same client")  # the connection is fine
    assert len(result.data) == 1


def test_a_bad_mask_names_the_mask(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as info:
        client(url).images.edit(image=png(), mask=("mask.png", mask_bytes()[:-30], "image/png"), prompt="edit")
    assert (info.value.param, info.value.code) == ("mask", "invalid_image_file")


@pytest.mark.parametrize(
    "image, code",
    [
        (("photo.png", image_bytes(), "application/octet-stream"), "unsupported_file_mimetype"),
        (("notes.txt", b"hello", "text/plain"), "unsupported_file_mimetype"),
        (image_bytes(), "unsupported_file_mimetype"),  # bare bytes: the SDK sends no usable type
    ],
)
def test_raw_bytes_without_an_image_type_are_refused_as_openai_does(server, image, code):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as info:
        client(url).images.edit(image=image, prompt="edit")
    assert (info.value.param, info.value.code) == ("image", code)
    assert "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'." in info.value.body["message"]


def test_a_body_that_is_neither_multipart_nor_json_is_refused(server):
    url, _ = server
    raw = httpx.post(
        f"{url}/images/edits",
        content=image_bytes(),
        headers={"Authorization": f"Bearer {client(url).api_key}", "Content-Type": "application/octet-stream"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_content_type"
    broken = httpx.post(
        f"{url}/images/edits",
        content=b'{"prompt": "x", "images": [',
        headers={"Authorization": f"Bearer {client(url).api_key}", "Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


# ---- item 4: errors and usage as OpenAI sends them ---------------------------------------------------------


@pytest.mark.parametrize("chars", ["x", "é", "😀"])
def test_a_too_long_prompt_has_one_code_whatever_its_characters(server, chars):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as info:
        client(url).images.edit(image=png(), prompt=chars * 32_001)
    err = info.value
    assert (err.param, err.code) == ("prompt", "string_above_max_length")
    assert err.body["message"] == (
        "Invalid 'prompt': string too long. Expected a string with maximum length 32000, but got a string with "
        "length 32001 instead."
    )


def test_the_providers_errors_reach_the_client_as_it_sent_them(tmp_path):
    refusal = {
        "status": 400,
        "message": "Invalid size '1024x1024' for this organization's tier.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
    }
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, script=[refusal]) as api:
        with serving(write_policy(tmp_path, api), tmp_path / "out") as (url, _):
            with pytest.raises(openai.BadRequestError) as info:
                client(url).images.edit(image=png(), prompt="edit")
            assert info.value.body == {k: refusal[k] for k in ("message", "type", "param", "code")}
            with pytest.raises(openai.BadRequestError) as info:
                client(url).images.edit(image=png(), prompt="a moderation-test prompt")
            sent = info.value.response.json()
            assert (
                sent["error"]["code"] == "moderation_blocked" and sent["error"]["type"] == "image_generation_user_error"
            )
            assert sent["error"]["message"].startswith("Your request was rejected by the safety system.")
            assert sent["moderation_details"] == {"moderation_stage": "input", "categories": ["stand-in"]}


def test_usage_is_passed_whole(server, upstream):
    url, _ = server
    raw = client(url).images.with_raw_response.edit(image=png(), prompt="usage", quality="low")
    result = raw.parse()
    sent = upstream.requests[-1]
    assert sent.status == 200
    usage = result.usage
    assert usage.output_tokens_details is not None and usage.output_tokens_details.image_tokens == usage.output_tokens
    assert usage.input_tokens_details.model_dump()["cached_tokens"] == 5  # a field the SDK's model does not name
    assert raw.http_response.json()["usage"]["input_tokens_details"]["cached_tokens"] == 5


# ---- item 7: both encodings, bracketed fields ----------------------------------------------------------------


def post_json(url: str, body: dict, **kwargs) -> ImagesResponse:
    return client(url, **kwargs).post("/images/edits", body=body, cast_to=ImagesResponse)


def test_a_json_body_with_a_data_url_and_a_file_id(server, upstream):
    url, _ = server
    result = post_json(
        url, {"prompt": "json edit", "images": [{"image_url": data_url(image_bytes())}], "quality": "low"}
    )
    assert len(result.data) == 1 and result.usage.output_tokens > 0
    assert upstream.requests[-1].fields["prompt"] == "json edit"
    file_id = add_file(upstream, image_bytes(48, 48))
    result = post_json(
        url, {"prompt": "by file id", "images": [{"file_id": file_id}], "model": "gpt-image-2.6-sunburst"}
    )
    assert len(result.data) == 1
    assert upstream.requests[-1].json["images"] == [{"file_id": file_id}]  # the provider's file: passed as a reference


def test_an_https_url_goes_to_the_provider_unless_the_server_may_fetch_it(tmp_path, upstream):
    photo = "https://images.example.test/photo.png"
    upstream.remote_images[photo] = image_bytes(80, 80)
    with serving(write_policy(tmp_path / "a", upstream), tmp_path / "a" / "out") as (url, _):
        post_json(url, {"prompt": "remote", "images": [{"image_url": photo}]})
        assert upstream.requests[-1].json["images"] == [{"image_url": photo}]  # fetching is off by default

    served = {photo: image_bytes(80, 80), "https://images.example.test/huge.png": b"\0" * 5000}
    fetcher = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=served[str(r.url)])))
    settings = ServeSettings(fetch_image_urls=True, fetch_private_hosts=True)
    folder = tmp_path / "b"
    with serving(
        write_policy(folder, upstream), folder / "out", settings=settings, limits=Limits(max_image_bytes=4000)
    ) as (
        url,
        service,
    ):
        service.refs._client = fetcher  # the download, on a MockTransport (no network in tests)
        post_json(url, {"prompt": "fetched here", "images": [{"image_url": photo}]})
        sent = upstream.requests[-1]
        assert sent.encoding == "multipart" and [p.name for p in sent.file_parts] == ["image"]
        assert sent.file_parts[0].size == len(served[photo])
        with pytest.raises(openai.BadRequestError) as info:
            post_json(url, {"prompt": "too big", "images": [{"image_url": "https://images.example.test/huge.png"}]})
        assert (info.value.param, info.value.code) == ("images[0].image_url", "invalid_image_url")


def test_a_private_address_is_never_fetched(tmp_path, upstream):
    settings = ServeSettings(fetch_image_urls=True)
    with serving(write_policy(tmp_path, upstream), tmp_path / "out", settings=settings) as (url, _):
        with pytest.raises(openai.BadRequestError) as info:
            post_json(url, {"prompt": "ssrf", "images": [{"image_url": "https://127.0.0.1/admin.png"}]})
    assert info.value.code == "invalid_image_url" and "private or local address" in info.value.body["message"]


def test_bracketed_and_newer_fields_from_the_sdk(server, upstream):
    url, _ = server
    sdk = client(url)
    result = sdk.images.edit(image=png(), prompt="moderated lightly", extra_body={"moderation": "low"})
    assert len(result.data) == 1 and upstream.requests[-1].json["moderation"] == "low"  # a JSON-only field: sent so
    sdk.images.edit(image=png(), prompt="annotated", markup=("markup.png", mask_bytes(), "image/png"), complexity="low")
    sent = upstream.requests[-1]
    assert [p.name for p in sent.file_parts] == ["image", "markup"] and sent.fields["complexity"] == "low"
    with pytest.raises(openai.BadRequestError) as info:  # svg[model]: accepted as a field, no backend makes SVG
        sdk.images.edit(image=png(), prompt="vector", output_format="svg", svg={"model": "gpt-5.4-mini"})
    assert (info.value.param, info.value.code) == ("output_format", "unsupported_value")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.images.edit(image=png(), prompt="x", extra_body={"svg": {"model": "m", "colour": "red"}})
    assert (info.value.param, info.value.code) == ("svg.colour", "unknown_parameter")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.images.edit(image=png(), prompt="x", extra_body={"style": {"tone": "warm"}})
    assert (info.value.param, info.value.code) == ("style", "unknown_parameter")
