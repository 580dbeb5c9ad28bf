"""`editroute serve` end to end: OpenAI's own Python SDK as the client, uvicorn on 127.0.0.1, the tiny random-weight
SDXL pipeline and the loopback OpenAI stand-in behind the router."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from openai import OpenAI
from openai.types import ImagesResponse
from PIL import Image

from backends.diffusion import runtime as diffusion_runtime
from backends.standins import FakeOpenAIServer
from pipeline.errors import ConfigError
from pipeline.serve import Limits, check_bind, load_api_keys
from tests.imagery import image_bytes, mask_bytes
from tests.serve_helpers import (
    KEY,
    UPSTREAM_KEY,
    client,
    decoded,
    edit,
    mask,
    png,
    run_threads,
    serving,
    write_policy,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(api_key=UPSTREAM_KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory, upstream, tiny_sdxl_dir):
    """API (stand-in) + tiny SDXL, cheapest first: masked single-image jobs go to SDXL, the rest to the API."""
    folder = tmp_path_factory.mktemp("serve")
    with serving(write_policy(folder, upstream, tiny_sdxl_dir), folder / "out") as (url, service):
        yield url, service


# ---- the OpenAI surface, parsed by the SDK's own models ---------------------------------------------------


def test_single_image_without_mask_goes_to_the_api_and_reports_its_cost(server, upstream):
    url, service = server
    before = len(upstream.requests)
    result, headers = edit(url, image=png(), prompt="put a red badge with the word SALE on it", quality="low")
    assert isinstance(result, ImagesResponse) and len(result.data) == 1
    assert result.output_format == "png" and result.quality == "low" and result.usage.output_tokens > 0
    assert decoded(result)[0].format == "PNG"
    assert headers["x-editroute-backend"] == "api" and headers["x-editroute-model"] == "gpt-image-2.6-sunburst"
    assert len(upstream.requests) == before + 1 and upstream.requests[-1].fields["prompt"].startswith("put a red")
    assert service.wait_idle()  # the answer came as soon as the result did; its files and ledger row follow
    rec = service.ledger.get(headers["x-editroute-job-id"])
    assert rec.status == "done" and rec.cost == Decimal(headers["x-editroute-cost-usd"]) > 0


def test_several_images_are_sent_upstream_as_an_array(server, upstream):
    url, _ = server
    result, headers = edit(url, image=[png(), png(32, 32), png(48, 48)], prompt="composite the product")
    assert headers["x-editroute-backend"] == "api" and len(result.data) == 1
    assert [p.name for p in upstream.requests[-1].file_parts] == ["image[]"] * 3


def test_concurrent_requests_share_one_loaded_sdxl_pipeline(server, monkeypatch):
    url, service = server
    sdxl = service.backends["sdxl-local"]
    running_now, most = [0], [0]
    lock = threading.Lock()
    real_call = sdxl._call_pipeline

    def counted(pipe, kwargs):  # the backend's pipeline-call seam: how many run at once
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        try:
            return real_call(pipe, kwargs)
        finally:
            with lock:
                running_now[0] -= 1

    monkeypatch.setattr(sdxl, "_call_pipeline", counted)
    diffusion_runtime.clear_cache()
    loads = diffusion_runtime.loads
    results = run_threads(4, lambda i: edit(url, image=png(), mask=mask(), prompt=f"concurrent {i}"))
    assert all(h["x-editroute-backend"] == "sdxl-local" and len(r.data) == 1 for r, h in results)
    assert diffusion_runtime.loads - loads == 1  # loaded once, for all four
    assert most[0] == 1 and sdxl.pipeline_calls >= 4  # one call on the GPU at a time, the others queued


def test_mask_routes_to_self_hosted_sdxl(server):
    url, service = server
    result, headers = edit(url, image=png(), mask=mask(), prompt="white studio backdrop", extra_body={"seed": 3})
    assert headers["x-editroute-backend"] == "sdxl-local" and result.size == "64x64"
    assert decoded(result)[0].size == (64, 64) and result.usage.total_tokens == 0
    assert service.wait_idle()
    saved = json.loads((service.out_dir / headers["x-editroute-job-id"] / "result.json").read_text())
    assert saved["seed"] == 3 and saved["backend"] == "sdxl-local"


def test_n_3_returns_three_images(server, upstream):
    url, _ = server
    result, headers = edit(url, image=png(), prompt="three variants", n=3)
    assert headers["x-editroute-backend"] == "api" and len(result.data) == 3
    assert upstream.requests[-1].fields["n"] == "3" and all(img.format == "PNG" for img in decoded(result))


def test_webp_with_compression(server, upstream):
    url, _ = server
    result, _ = edit(url, image=png(), prompt="webp please", output_format="webp", output_compression=40)
    assert result.output_format == "webp" and decoded(result)[0].format == "WEBP"
    assert upstream.requests[-1].fields["output_compression"] == "40"


def test_an_openai_model_id_pins_the_api_backend_at_that_model(server, upstream):
    url, _ = server
    result, headers = edit(url, image=png(), mask=mask(), prompt="same job, newer model", model="gpt-image-2.6-flare")
    assert headers["x-editroute-backend"] == "api" and headers["x-editroute-model"] == "gpt-image-2.6-flare"
    assert upstream.requests[-1].fields["model"] == "gpt-image-2.6-flare" and len(result.data) == 1


def test_shutdown_closes_the_connections_of_a_re_targeted_model(tmp_path, upstream):
    with serving(write_policy(tmp_path / "cfg", upstream), tmp_path / "out") as (url, service):
        edit(url, image=png(), prompt="newer model", model="gpt-image-2.6-flare")
        http = service.backend_for(service.resolve("gpt-image-2.6-flare"))._client._client  # its LazyClient's
        assert http is not None and not http.is_closed
    assert http.is_closed


# ---- refusals: the SDK's own exception types, never retried -----------------------------------------------


@pytest.mark.parametrize(
    "kwargs, param, code",
    [
        ({"n": 11}, "n", "integer_above_max_value"),
        ({"n": 0}, "n", "integer_below_min_value"),
        ({"quality": "ultra"}, "quality", "invalid_value"),
        ({"response_format": "b64_json"}, "response_format", "unknown_parameter"),
        ({"extra_body": {"num_inference_steps": "30"}}, "num_inference_steps", "unknown_parameter"),
        ({"mask": ("mask.png", mask_bytes(32, 32), "image/png")}, "mask", "invalid_value"),
        ({"image": ("notes.txt", b"hello", "text/plain")}, "image", "unsupported_file_mimetype"),
        ({"image": ("photo.png", image_bytes(), "application/octet-stream")}, "image", "unsupported_file_mimetype"),
        ({"image": ("broken.png", image_bytes()[:80], "image/png")}, "image", "invalid_image_file"),
        ({"model": "sdxl-local"}, "mask", "unsupported_value"),  # pinned to SDXL without a mask
        ({"size": "1000x1000"}, "size", "invalid_value"),
        ({"prompt": ""}, "prompt", "empty_string"),
    ],
)
def test_bad_input_is_a_bad_request_naming_the_parameter(server, kwargs, param, code):
    url, service = server
    sent_before = service.metrics.requests.get((("route", "/v1/images/edits"), ("code", "400")), 0)
    args = {"image": png(), "prompt": "edit", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client(url, max_retries=2).images.edit(**args)
    err = info.value
    assert err.status_code == 400 and err.param == param and err.code == code
    assert err.type == ("image_generation_user_error" if code == "invalid_image_file" else "invalid_request_error")
    assert err.response.headers["x-should-retry"] == "false"
    assert service.metrics.requests[(("route", "/v1/images/edits"), ("code", "400"))] == sent_before + 1  # no retry


@pytest.mark.parametrize("model", ["dall-e-2", "no-such-model", "gpt-image-1"])
def test_a_model_not_served_here_is_not_found(server, model):
    url, _ = server
    with pytest.raises(openai.NotFoundError) as info:
        client(url).images.edit(image=png(), prompt="edit", model=model)
    assert (info.value.status_code, info.value.param, info.value.code) == (404, "model", "model_not_found")
    assert f"'{model}'" in info.value.message


def test_wrong_or_missing_key_is_an_authentication_error(server):
    url, _ = server
    with pytest.raises(openai.AuthenticationError) as info:
        client(url, api_key="er-wrong-key").images.edit(image=png(), prompt="edit")
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    assert "er-wrong-key" not in info.value.message and info.value.response.headers["x-should-retry"] == "false"
    missing = httpx.post(f"{url}/images/edits", files={"image": png()}, data={"prompt": "edit"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert httpx.get(url.replace("/v1", "/metrics")).status_code == 401


def test_size_limits_hold_before_the_body_is_read(tmp_path, upstream):
    small = Limits(max_images=2, max_image_bytes=30_000)
    before = len(upstream.requests)
    with serving(write_policy(tmp_path, upstream), tmp_path / "out", limits=small) as (url, _):
        with pytest.raises(openai.BadRequestError) as info:  # a third image part is refused as it arrives
            client(url).images.edit(image=[png(), png(), png()], prompt="edit")
        assert info.value.param == "image"
        big = ("big.png", image_bytes(200, 200, "png") + b"\0" * 40_000, "image/png")
        with pytest.raises(openai.BadRequestError) as info:
            client(url).images.edit(image=big, prompt="edit")
        assert info.value.param == "image" and info.value.code == "file_too_large"
        with pytest.raises(openai.BadRequestError) as info:
            client(url).images.edit(image=png(), prompt="x" * 40_000)
        assert info.value.param == "prompt"
        # a 1 GB upload is answered 413 from its headers alone, before the client sends the body
        status, body = raw_post_headers(
            url,
            {
                "Authorization": f"Bearer {KEY}",
                "Content-Length": str(10**9),
                "Content-Type": "multipart/form-data; boundary=b",
            },
        )
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert len(upstream.requests) == before  # nothing above reached the API


def raw_post_headers(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send only a POST's headers on a raw socket and read the answer."""
    import socket

    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_text, _, body = data.partition(b"\r\n\r\n")
    return int(head_text.split()[1]), body


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


# ---- never run or bill twice ------------------------------------------------------------------------------


def test_idempotency_key_returns_the_stored_result(server, upstream):
    url, service = server
    before = len(upstream.requests)
    headers = {"Idempotency-Key": "order-1234"}
    first, h1 = edit(url, image=png(), prompt="idempotent edit", extra_headers=headers)
    again, h2 = edit(url, image=png(), prompt="idempotent edit", extra_headers=headers)
    assert len(upstream.requests) == before + 1 and h2["x-editroute-reused"] == "true"
    assert h1["x-editroute-billed-usd"] == h1["x-editroute-cost-usd"] == h2["x-editroute-cost-usd"] != "0"
    assert h2["x-editroute-billed-usd"] == "0"
    assert again.data[0].b64_json == first.data[0].b64_json and h1["x-editroute-job-id"] == h2["x-editroute-job-id"]
    with pytest.raises(openai.BadRequestError) as info:  # same key, another request
        client(url).images.edit(image=png(), prompt="something else", extra_headers=headers)
    assert info.value.code == "idempotency_key_reused"


def test_retry_after_a_client_timeout_is_not_billed_twice(tmp_path):
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, latency_s=1.2) as slow:
        with serving(write_policy(tmp_path, slow), tmp_path / "out") as (url, service):
            # The SDK gives up after 0.7 s (connection closed), then retries the same request on its own.
            result, headers = edit_with(url, timeout=0.7, max_retries=3)
            assert len(result.data) == 1 and headers["x-editroute-reused"] == "true"
            assert len(slow.requests) == 1  # the upstream API was called (and billed) once
            assert service.wait_idle()
            jobs = list(service.ledger.jobs())
            assert len(jobs) == 1 and jobs[0].status == "done"
            attempts = service.ledger.attempts(jobs[0].id)
            assert len(attempts) == 1 and service.ledger.total_spent() == attempts[0]["cost"] > 0
            assert headers["x-editroute-billed-usd"] == "0"
            assert Decimal(headers["x-editroute-cost-usd"]) == attempts[0]["cost"]

            # concurrent identical seeded requests share one job too
            results = run_threads(
                3, lambda i: edit(url, image=png(), prompt="concurrent duplicate", extra_body={"seed": 7})
            )
            assert len(slow.requests) == 2 and len({r[0].data[0].b64_json for r in results}) == 1
            assert sorted(r[1]["x-editroute-billed-usd"] == "0" for r in results) == [False, True, True]


def test_identical_unseeded_requests_are_new_jobs_billed_each_time(server, upstream):
    """Like OpenAI: the same photo and prompt sent again (not as a retry) makes a new image, billed again."""
    url, service = server
    before = len(upstream.requests)
    _, h1 = edit(url, image=png(), prompt="another variant please")
    _, h2 = edit(url, image=png(), prompt="another variant please")
    assert len(upstream.requests) == before + 2
    assert h1["x-editroute-job-id"] != h2["x-editroute-job-id"]
    assert service.wait_idle()
    for h in (h1, h2):
        assert h["x-editroute-reused"] == "false" and h["x-editroute-billed-usd"] == h["x-editroute-cost-usd"] != "0"
        rec = service.ledger.get(h["x-editroute-job-id"])
        assert rec.status == "done" and rec.cost == Decimal(h["x-editroute-billed-usd"])


def test_identical_seeded_requests_reuse_the_stored_result(server, upstream):
    url, service = server
    before = len(upstream.requests)
    first, h1 = edit(url, image=png(), prompt="seeded, deterministic", extra_body={"seed": 42})
    again, h2 = edit(url, image=png(), prompt="seeded, deterministic", extra_body={"seed": 42})
    assert len(upstream.requests) == before + 1 and again.data[0].b64_json == first.data[0].b64_json
    assert h1["x-editroute-job-id"] == h2["x-editroute-job-id"]
    assert (h1["x-editroute-reused"], h2["x-editroute-reused"]) == ("false", "true")
    assert h2["x-editroute-billed-usd"] == "0" and h2["x-editroute-cost-usd"] == h1["x-editroute-billed-usd"] != "0"


def edit_with(url: str, **client_kwargs):
    raw = client(url, **client_kwargs).images.with_raw_response.edit(image=png(), prompt="slow upstream edit")
    return raw.parse(), raw.headers


# ---- budgets, upstream failures -----------------------------------------------------------------------------


def test_budget_spent_by_a_batch_run_holds_for_the_server(tmp_path):
    from pipeline.run import run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes())
    (folder / "jobs.jsonl").write_text(json.dumps({"id": "batch-1", "image": "a.png", "prompt": "batch"}) + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "backends": {"fast": {"kind": "function", "cost_per_image": 0.03}},
                "quality": {"fast": 0.7},
                "budgets": [{"backend": "fast", "period": "day", "limit_usd": 0.05}],
            }
        )
    )
    assert run_batch(folder / "jobs.jsonl", policy, tmp_path / "out").ok
    with serving(policy, tmp_path / "out") as (url, service):
        with pytest.raises(openai.RateLimitError) as info:
            client(url, max_retries=2).images.edit(image=png(), prompt="one more")
        err = info.value
        assert err.code == "insufficient_quota" and err.response.headers["x-should-retry"] == "false"
        assert "budget" in err.message and service.ledger.total_spent() == Decimal("0.03")


def test_upstream_errors_are_passed_on_as_the_provider_sent_them(tmp_path):
    """The provider's 500 reaches the client as its 500 (same message); a dropped connection, which has no answer
    to pass on, is our 503 with retry-after; the SDK's retry then runs the edit again, and it works."""
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, script=[500, "drop"]) as failing:
        with serving(write_policy(tmp_path, failing), tmp_path / "out") as (url, _):
            with pytest.raises(openai.InternalServerError) as info:
                client(url, max_retries=0).images.edit(image=png(), prompt="upstream down")
            assert info.value.status_code == 500
            assert info.value.body["message"] == "The server had an error while processing your request."
            with pytest.raises(openai.InternalServerError) as info:
                client(url, max_retries=0).images.edit(image=png(), prompt="upstream down")
            assert info.value.status_code == 503 and info.value.response.headers["retry-after"] == "2"
            result, _ = edit(url, image=png(), prompt="upstream down")  # a retry runs it again, and it works
            assert len(result.data) == 1


# ---- models, health, metrics ------------------------------------------------------------------------------


def test_models_retrieve_answers_each_listed_model_and_a_404_envelope_otherwise(server):
    """`client.models.retrieve(id)`, one of the SDK's basic calls: every listed id, and OpenAI's 404 for others
    (a retired model says when it was shut down)."""
    url, _ = server
    sdk = client(url)
    for mid in ("auto", "api", "gpt-image-2.6-flare"):
        model = sdk.models.retrieve(mid)
        assert (model.id, model.object) == (mid, "model")
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.models.retrieve("gpt-image-1")
    assert gone.value.code == "model_not_found" and "2026-10-23" in gone.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.models.retrieve("no-such-model")
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"


def test_models_health_and_metrics(server):
    url, _ = server
    ids = [m.id for m in client(url).models.list()]
    assert ids[:3] == ["auto", "api", "sdxl-local"] and "gpt-image-2.6-flare" in ids and "dall-e-2" not in ids
    assert "gpt-image-1" not in ids and "gpt-image-1.5" not in ids  # retired: not offered
    assert httpx.get(url.replace("/v1", "/healthz")).json() == {
        "status": "ok",
        "backends": ["api", "sdxl-local"],
        "auth": True,
    }
    edit(url, image=png(), prompt="for the metrics")
    text = httpx.get(url.replace("/v1", "/metrics"), headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'editroute_jobs_total{backend="api",status="done"}' in text
    assert 'editroute_http_requests_total{route="/v1/images/edits",code="200"}' in text
    assert 'editroute_job_latency_seconds_count{backend="api"}' in text
    assert 'editroute_spend_usd_total{backend="api"}' in text and 'editroute_ledger_spend_usd{backend="api"}' in text


def test_api_backends_default_to_a_proxys_concurrency_and_say_so(server):
    _, service = server  # its policy's api backend sets no concurrency
    assert service.executor.limits["api"].concurrency == 64
    assert (
        "api: 64 call(s) in flight (serve's default for API backends; set concurrency: in the policy to change it)"
        in (service.describe_limits())
    )


# ---- configuration and the documented commands ------------------------------------------------------------


def test_keys_from_file_and_env_and_loopback_only_without_keys(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# clients\nkey-a\nkey-b, key-c\n")
    assert load_api_keys(f, env={"EDITROUTE_API_KEYS": "key-d,key-a"}) == ("key-d", "key-a", "key-b", "key-c")
    assert load_api_keys(None, env={}) == ()
    check_bind("127.0.0.1", ())
    check_bind("0.0.0.0", ("key-a",))
    with pytest.raises(ConfigError, match="no API keys"):
        check_bind("0.0.0.0", ())
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_keys(tmp_path / "missing", env={})


README_SNIPPET = """\
import base64
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-editroute-local")
result = client.images.edit(model="auto", image=open("photo.png", "rb"), prompt="Put the bottle on a white backdrop")
open("edited.png", "wb").write(base64.b64decode(result.data[0].b64_json))
"""


def test_readme_snippet_works_as_written(tmp_path, upstream, monkeypatch):
    (tmp_path / "photo.png").write_bytes(image_bytes())
    monkeypatch.chdir(tmp_path)
    with serving(write_policy(tmp_path / "cfg", upstream), tmp_path / "out", keys="") as (url, _):
        exec(compile(README_SNIPPET.replace("http://127.0.0.1:8000/v1", url), "README", "exec"), {})
    assert Image.open(tmp_path / "edited.png").format == "PNG"


def test_serve_command_with_the_shipped_balanced_policy_and_the_readme_snippet(tmp_path, monkeypatch):
    """The README's commands as a user runs them: `editroute serve --policy configs/policies/balanced.yaml` with its
    OpenAI backends pointed at the stand-in by $OPENAI_BASE_URL, then the five-line snippet; no key in any output."""
    port = _free_port()
    with FakeOpenAIServer(api_key=UPSTREAM_KEY) as api:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "serve",
                "--policy",
                "configs/policies/balanced.yaml",
                "--port",
                str(port),
                "--out",
                str(tmp_path / "out"),
            ],
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={
                "PATH": "/usr/bin:/bin",
                "HF_HUB_OFFLINE": "1",
                "OPENAI_BASE_URL": api.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
            },
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"editroute serve did not start: {proc.communicate(timeout=30)[1]}")
                time.sleep(0.2)
            backends = ["api", "api-flare", "api-batch", "sdxl-local"]  # (the batch lane takes no request: no deadline)
            assert health.json()["backends"] == backends and not health.json()["auth"]
            ids = [m.id for m in OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x").models.list()]
            assert ids[:5] == ["auto", *backends]
            (tmp_path / "photo.png").write_bytes(image_bytes())
            monkeypatch.chdir(tmp_path)
            exec(compile(README_SNIPPET.replace(":8000/", f":{port}/"), "README", "exec"), {})
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
    assert Image.open(tmp_path / "edited.png").format == "PNG"
    # rule "no mask" -> api-flare (everyday edits)
    assert [(r.status, r.fields["model"]) for r in api.requests] == [(200, "gpt-image-2.6-flare")]
    assert f"listening on http://127.0.0.1:{port}/v1" in err and "auth: OFF" in err
    flat = " ".join(err.split())
    assert "backend api: 4 call(s) in flight (the policy's concurrency:)" in flat  # said, not silent
    assert "backend sdxl-local: 1 pipeline call at a time on its device" in flat
    lane = "backend api-batch: not used by the server (a batch lane: results within 24h; requests carry no deadline)"
    assert lane in flat
    assert f"ledger: {tmp_path / 'out' / 'editroute.db'}" in err.replace("\n", "")
    files = [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) >= 3 and not [f for f in [*files, err.encode()] if UPSTREAM_KEY.encode() in f]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
