"""Issue 13, item 5: `stream=true` with the official SDK (sync and async) against `editroute serve` on loopback:
OpenAI's `image_edit.partial_image` and `image_edit.completed` events from the OpenAI backend (which streams from
the loopback stand-in) and from SDXL (previews decoded from intermediate latents); a backend that cannot preview
refuses `stream`; 16 streaming clients at once; a client leaving mid-stream cancels its job and its spend is
recorded."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from decimal import Decimal

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from PIL import Image

from backends.standins import FakeOpenAIServer
from tests.fixtures_sdxl import tiny_settings
from tests.serve_helpers import KEY, UPSTREAM_KEY, mask, png, run_threads, serving, write_policy


def size_of(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, stream_interval_s=0.05) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream, tiny_sdxl_dir):
    folder = tmp_path_factory.mktemp("stream")
    policy = write_policy(folder, upstream, tiny_sdxl_dir)
    text = policy.read_text().replace("steps: 2", "steps: 8")  # room for previews between the steps
    policy.write_text(text)
    with serving(policy, folder / "out") as (url, service):
        yield url, service


def test_sync_stream_yields_partial_images_then_the_completed_image_with_usage(server, upstream):
    url, service = server
    sdk = OpenAI(base_url=url, api_key=KEY)
    events = list(
        sdk.images.edit(
            image=png(), prompt="streamed", quality="low", stream=True, partial_images=2, extra_body={"tags": "s1"}
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    done = events[-1]
    # the size rule: `auto` is the input's own size (the stand-in answered its 1024x1024 bucket)
    assert size_of(done.b64_json) == (64, 64) and done.size == "64x64" and done.quality == "low"
    sent = upstream.requests[-1]
    assert (sent.fields["stream"], sent.fields["partial_images"]) == ("true", "2")  # streamed from upstream too
    assert done.usage.output_tokens == 196 + 2 * 100  # 100 output tokens per partial image
    assert service.wait_idle()
    (record,) = [r for p in service.out_dir.glob("*/result.json") if (r := json.loads(p.read_text()))["tags"] == ["s1"]]
    assert record["usage"]["output_tokens"] == 396  # the partial images are billed with the edit
    assert service.ledger.get(record["job_id"]).cost == Decimal(record["cost_usd"]) >= Decimal("0.00003") * 396


def test_async_stream(server):
    url, _ = server

    async def go():
        sdk = AsyncOpenAI(base_url=url, api_key=KEY)
        stream = await sdk.images.edit(image=png(), prompt="streamed async", stream=True, partial_images=1)
        return [e async for e in stream]

    events = asyncio.run(go())
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[-1].usage.output_tokens > 100


def test_sdxl_streams_previews_decoded_from_intermediate_latents(server):
    url, service = server
    sdk = OpenAI(base_url=url, api_key=KEY)
    stream = sdk.images.with_raw_response.edit(
        image=png(), mask=mask(), prompt="white backdrop", stream=True, partial_images=3
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-editroute-job-id"].startswith("http-")
    events = list(stream.parse())
    assert [e.type for e in events] == ["image_edit.partial_image"] * 3 + ["image_edit.completed"]
    assert all(size_of(e.b64_json) == (64, 64) for e in events)
    previews = {e.b64_json for e in events}
    assert len(previews) == 4  # each preview is a different stage of the denoising


def test_a_backend_that_cannot_preview_refuses_stream(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as info:
        OpenAI(base_url=url, api_key=KEY).images.edit(image=png(), prompt="x", model="gpt-image-2", stream=True)
    err = info.value
    assert (err.param, err.code) == ("stream", "unsupported_value") and "gpt-image-2" in err.body["message"]


def test_sixteen_streaming_clients_all_finish(server):
    url, _ = server

    def one(i: int):
        sdk = OpenAI(base_url=url, api_key=KEY)
        return [e.type for e in sdk.images.edit(image=png(), prompt=f"many {i}", stream=True, partial_images=1)]

    results = run_threads(16, one)
    assert all(r == ["image_edit.partial_image", "image_edit.completed"] for r in results)


def test_a_client_leaving_mid_stream_cancels_the_job_and_records_the_spend(tmp_path):
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, stream_interval_s=1.0) as slow:
        with serving(write_policy(tmp_path, slow), tmp_path / "out") as (url, service):
            sdk = OpenAI(base_url=url, api_key=KEY)
            stream = sdk.images.edit(image=png(), prompt="leaves early", stream=True, partial_images=3)
            first = next(iter(stream))
            assert first.type == "image_edit.partial_image"
            stream.close()  # the client goes away after one partial image
            started = time.monotonic()
            assert service.wait_idle(timeout_s=10)
            assert time.monotonic() - started < 3  # the job stopped at the next event, not after all of them
            (job,) = list(service.ledger.jobs())
            assert job.status != "done"
            (attempt,) = service.ledger.attempts(job.id)
            # the provider may bill the abandoned call: its hold stays as a possible charge, never free
            assert attempt["state"] == "reserved" and attempt["outcome"] == "unknown" and attempt["reserved"] > 0
            assert service.ledger.total_spent() == attempt["reserved"]


def test_an_sdxl_client_leaving_stops_the_denoising(tmp_path, tiny_sdxl_dir):
    import yaml

    policy = tmp_path / "policy.yaml"
    settings = tiny_settings(tiny_sdxl_dir, tiers={"medium": {"steps": 40}})
    policy.write_text(
        yaml.safe_dump({"backends": {"sdxl-local": {"kind": "sdxl", **settings}}, "quality": {"sdxl-local": 0.6}})
    )
    with serving(policy, tmp_path / "out") as (url, service):
        sdk = OpenAI(base_url=url, api_key=KEY)
        stream = sdk.images.edit(image=png(), mask=mask(), prompt="stop me", stream=True, partial_images=3)
        assert next(iter(stream)).type == "image_edit.partial_image"
        stream.close()
        assert service.wait_idle(timeout_s=60)
        (job,) = list(service.ledger.jobs())
        assert job.status != "done"
        (attempt,) = service.ledger.attempts(job.id)
        assert attempt["state"] == "settled" and attempt["cost"] > 0  # the GPU-seconds it ran
        assert "client went away" in (attempt["error"] or "")
        sdxl = service.backends["sdxl-local"]
        assert sdxl.pipeline_calls == 1


def test_preview_steps_are_spread_before_the_end():
    from backends.diffusion.step_previews import preview_steps

    assert preview_steps(30, 3) == {8, 15, 22}
    assert preview_steps(8, 3) == {2, 4, 6}
    assert preview_steps(2, 3) == {1} and preview_steps(1, 2) == set() and preview_steps(30, 0) == set()


def test_auto_routing_only_considers_backends_that_stream(tmp_path, upstream):
    with serving(write_policy(tmp_path, upstream, api={"model": "gpt-image-2"}), tmp_path / "out") as (url, _):
        sdk = OpenAI(base_url=url, api_key=KEY)
        with pytest.raises(openai.BadRequestError) as info:
            list(sdk.images.edit(image=png(), prompt="auto, streamed", stream=True))
        assert (info.value.param, info.value.code) == ("stream", "unsupported_value")
        assert len(sdk.images.edit(image=png(), prompt="auto, not streamed").data) == 1
