"""The Batch API lane on the wire: `OpenAIBatchBackend` against httpx.MockTransport and the loopback stand-in, the
stand-in against OpenAI's own SDK (3.63: its types are the contract), and the pure line/Batch parsing."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal

import httpx
import openai
import pytest

from backends.errors import BackendMisconfigured, BackendUnavailable, ContentRejected, InvalidRequest, OutcomeUnknown
from backends.images import InputImage
from backends.openai import OpenAIBatchBackend, wire
from backends.openai import batch_wire as bw
from backends.openai.batch import Settings
from backends.standins import FakeOpenAIServer
from tests.backend_contract import make_request
from tests.imagery import image_bytes

KEY = "sk-unit-batch-0123456789abcdef"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def api():
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def sdk(srv: FakeOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0)


def lane(base_url: str = "https://api.test/v1", client: httpx.Client | None = None, **settings) -> OpenAIBatchBackend:
    settings.setdefault("model", "gpt-image-2")
    return OpenAIBatchBackend("lane", Settings(base_url=base_url, **settings), client=client, sleep=lambda s: None)


def jsonl(srv: FakeOpenAIServer, lines: list[tuple[str, dict]]) -> str:
    data = b"".join(bw.request_line(cid, body) for cid, body in lines)
    return sdk(srv).files.create(file=("in.jsonl", data, "application/jsonl"), purpose="batch").id


def edit_body(prompt: str, file_id: str) -> dict:
    return {
        "model": "gpt-image-2",
        "prompt": prompt,
        "images": [{"file_id": file_id}],
        "size": "1024x1024",
        "quality": "low",
        "output_format": "jpeg",
    }


def wait_final(srv: FakeOpenAIServer, batch_id: str):
    client = sdk(srv)
    deadline = time.monotonic() + 30
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in bw.FINAL or time.monotonic() > deadline:
            return b
        time.sleep(0.02)


# ---- the stand-in speaks the SDK's wire format ---------------------------------------------------------------


def test_standin_batch_lifecycle_through_openais_sdk(api):
    client = sdk(api)
    img = client.files.create(file=("p.png", image_bytes(64, 64), "image/png"), purpose="vision")
    bodies = [edit_body(f"edit {i}" + (" batch-fail-test" if i == 1 else ""), img.id) for i in range(3)]
    created = client.batches.create(
        completion_window="24h",
        endpoint="/v1/images/edits",
        input_file_id=jsonl(api, [(f"job{i}", b) for i, b in enumerate(bodies)]),
        metadata={bw.RUN_KEY: "r1", bw.BATCH_KEY: "k1"},
    )
    assert created.status == "validating" and created.metadata == {bw.RUN_KEY: "r1", bw.BATCH_KEY: "k1"}
    done = wait_final(api, created.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    assert done.usage is not None and done.usage.output_tokens > 0
    out = [bw.parse_line(line) for line in client.files.content(done.output_file_id).content.splitlines()]
    err = [bw.parse_line(line) for line in client.files.content(done.error_file_id).content.splitlines()]
    assert sorted(r.custom_id for r in out) == ["job0", "job2"] and all(r.ok for r in out)
    assert [(r.custom_id, r.status_code) for r in err] == [("job1", 500)]
    assert {cid for _, cid, _ in api.batch_bills} == {"job0", "job2"}  # only lines that ran are billed


def test_standin_lists_newest_first_with_pagination(api):
    client = sdk(api)
    img = client.files.create(file=("p.png", image_bytes(64, 64), "image/png"), purpose="vision")
    ids = []
    for i in range(5):
        b = client.batches.create(
            completion_window="24h",
            endpoint="/v1/images/edits",
            input_file_id=jsonl(api, [("a", edit_body(f"p{i}", img.id))]),
            metadata={bw.BATCH_KEY: f"k{i}"},
        )
        ids.append(b.id)
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows `after` to the end


def test_standin_refuses_what_the_api_refuses(api):
    client = sdk(api)
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        client.files.create(file=("in.txt", b"{}", "text/plain"), purpose="batch")
    fid = jsonl(api, [("a", {"model": "gpt-image-2"})])
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(completion_window="1h", endpoint="/v1/images/edits", input_file_id=fid)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            completion_window="24h", endpoint="/v1/images/edits", input_file_id=fid, metadata={"k": "x" * 513}
        )
    dup = jsonl(api, [("a", {}), ("a", {})])
    failed = wait_final(
        api, client.batches.create(completion_window="24h", endpoint="/v1/images/edits", input_file_id=dup).id
    )
    assert failed.status == "failed" and failed.errors.data[0].code == "duplicate_custom_id"


def test_standin_expiry_returns_completed_lines_and_expires_the_rest(api):
    api.batch_expire_after = 2
    client = sdk(api)
    img = client.files.create(file=("p.png", image_bytes(64, 64), "image/png"), purpose="vision")
    fid = jsonl(api, [(f"j{i}", edit_body(f"p{i}", img.id)) for i in range(5)])
    done = wait_final(
        api, client.batches.create(completion_window="24h", endpoint="/v1/images/edits", input_file_id=fid).id
    )
    assert done.status == "expired" and done.request_counts.completed == 2
    err = [bw.parse_line(x) for x in client.files.content(done.error_file_id).content.splitlines()]
    assert [(r.custom_id, r.error_code) for r in err] == [(f"j{i}", "batch_expired") for i in (2, 3, 4)]
    assert len(api.batch_bills) == 2


def test_standin_cancel_keeps_finished_lines(api):
    api.batch_line_s = 0.05
    client = sdk(api)
    img = client.files.create(file=("p.png", image_bytes(64, 64), "image/png"), purpose="vision")
    fid = jsonl(api, [(f"j{i}", edit_body(f"p{i}", img.id)) for i in range(40)])
    b = client.batches.create(completion_window="24h", endpoint="/v1/images/edits", input_file_id=fid)
    while client.batches.retrieve(b.id).request_counts.completed < 2:
        time.sleep(0.02)
    assert client.batches.cancel(b.id).status == "cancelling"
    done = wait_final(api, b.id)
    assert done.status == "cancelled" and 2 <= done.request_counts.completed < 40
    lines = client.files.content(done.output_file_id).content.splitlines()
    assert len(lines) == done.request_counts.completed == len(api.batch_bills)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(b.id)


# ---- the backend: files, batches, lines --------------------------------------------------------------------


def test_backend_drives_the_standin_end_to_end(api, key):
    b = lane(api.base_url)
    request = make_request(mask=True, size="1024x1024", quality="low", output_format="jpeg", job_id="j1")
    uploads: list[str] = []

    def upload(img: InputImage, field: str) -> str:
        uploads.append(field)
        return b.upload(img.read(), img.name, "vision", img.mime)["id"]

    body = b.line_body(request, upload)
    assert uploads == ["image", "mask"] and body["images"][0].keys() == {"file_id"} and "file_id" in body["mask"]
    input_id = b.upload(bw.request_line("j1", body), "in.jsonl", "batch", "application/jsonl")["id"]
    created = b.create(input_id, {bw.RUN_KEY: "run", bw.BATCH_KEY: "k"})
    assert api.batch_creates[-1].json == {
        "input_file_id": input_id,
        "endpoint": "/v1/images/edits",
        "completion_window": "24h",
        "metadata": {bw.RUN_KEY: "run", bw.BATCH_KEY: "k"},
    }
    assert b.find({bw.BATCH_KEY: "k"}, created_after=0).id == created.id
    assert b.find({bw.BATCH_KEY: "nope"}, created_after=0) is None
    while not (info := b.retrieve(created.id)).final:
        time.sleep(0.02)
    out = io.BytesIO()
    assert b.download(info.output_file_id, out) == len(out.getvalue()) > 0
    result = b.result_from_line(request, out.getvalue().splitlines()[0], created.id)
    assert result.cost_usd == api.batch_bills[0][2]  # billed at Batch rates from the line's usage, to the cent
    assert (
        result.cost_usd
        == Decimal(result.usage.input_text_tokens) * Decimal("2.5") / 10**6
        + Decimal(result.usage.input_image_tokens) * 4 / 10**6
        + Decimal(result.usage.output_image_tokens) * 15 / 10**6
    )
    assert result.output_format == "jpeg" and result.extras["batch_id"] == created.id and len(result.images) == 1


def test_data_urls_inline_and_too_long_refused(key):
    b = lane()
    body = b.line_body(make_request(mask=False))
    assert body["images"][0]["image_url"].startswith("data:image/png;base64,")
    huge = InputImage(name="big.png", format="PNG", width=64, height=64, nbytes=16_000_000, has_alpha=False)
    with pytest.raises(InvalidRequest, match="data URL"):
        b.line_body(make_request(mask=False).__class__(prompt="p", images=(huge,)))


def test_estimate_and_prices_are_batch_rates_and_window_is_a_capability():
    b = lane()
    assert b.prices.image_out == Decimal("15.00") and b.capabilities.turnaround_s == 86400
    est = b.estimate(make_request(mask=True, size="1024x1024", quality="high"))
    from backends.openai import OpenAIEditBackend
    from backends.openai import Settings as SyncSettings

    sync = OpenAIEditBackend("sync", SyncSettings(model="gpt-image-2")).estimate(
        make_request(mask=True, size="1024x1024", quality="high")
    )
    assert est.usd * 2 == sync.usd and est.basis.startswith("Batch API rates, results within 24h")
    with pytest.raises(BackendMisconfigured, match="single-call"):
        b.edit(make_request())


def test_model_without_batch_rates_is_refused_unless_rates_given():
    from backends.openai.batch import batch_prices
    from backends.pricing import load_prices

    entry = load_prices().models["gpt-image-2"].model_copy(update={"batch": None})
    with pytest.raises(BackendMisconfigured, match="no Batch rates"):
        batch_prices(entry, "gpt-image-2")
    with pytest.raises(BackendMisconfigured, match="not in prices.yaml"):
        lane(model="gpt-image-9")
    own = lane(model="gpt-image-9", rates={"text_in": "1", "image_in": "2", "image_out": "3"})  # a contract's rates
    assert own.prices.image_out == Decimal("3") and not own.prices.verified


def test_create_is_never_resent_after_a_lost_answer(key):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ReadTimeout("no answer", request=request)

    b = lane(client=httpx.Client(transport=httpx.MockTransport(handler)), max_retries=2)
    with pytest.raises(OutcomeUnknown):
        b.create("file-1", {bw.BATCH_KEY: "k"})
    assert calls == ["/v1/batches"]  # one try: a second might create a second batch


def test_retrieve_retries_server_errors_and_reports_misconfiguration(key):
    answers = [httpx.Response(500, json={"error": {"message": "boom", "type": "server_error"}})]
    answers.append(httpx.Response(200, json={"id": "batch_1", "object": "batch", "status": "in_progress"}))
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    b = lane(client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert b.retrieve("batch_1").status == "in_progress" and len(seen) == 2
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    gone = lane(client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401, json={}))))
    with pytest.raises(BackendMisconfigured, match="401"):
        gone.retrieve("batch_1")


def test_find_pages_back_only_as_far_as_asked(key):
    pages = {
        None: {"object": "list", "data": [_batch("b3", 300), _batch("b2", 200)], "has_more": True},
        "b2": {"object": "list", "data": [_batch("b1", 100, {"editroute_batch": "k1"})], "has_more": False},
    }
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("after"))
        return httpx.Response(200, json=pages[request.url.params.get("after")])

    b = lane(client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert b.find({"editroute_batch": "k1"}, created_after=50).id == "b1" and asked == [None, "b2"]
    asked.clear()
    assert b.find({"editroute_batch": "k1"}, created_after=250) is None and asked == [None]


def _batch(bid: str, created: int, metadata: dict | None = None) -> dict:
    return {"id": bid, "object": "batch", "status": "completed", "created_at": created, "metadata": metadata}


# ---- lines -------------------------------------------------------------------------------------------------


def test_line_errors_map_like_synchronous_calls():
    def err(status, code=None, type_="invalid_request_error"):
        body = {"error": {"message": "m", "type": type_, "param": None, "code": code}}
        return bw.parse_line({"custom_id": "c", "response": {"status_code": status, "body": body}, "error": None})

    assert isinstance(bw.line_error(err(400), key_source="$K"), InvalidRequest)
    assert isinstance(
        bw.line_error(err(400, "moderation_blocked", "image_generation_user_error"), key_source="$K"), ContentRejected
    )
    assert type(bw.line_error(err(500, type_="server_error"), key_source="$K")) is BackendUnavailable
    expired = bw.parse_line({"custom_id": "c", "response": None, "error": {"code": "batch_expired", "message": "late"}})
    assert isinstance(bw.line_error(expired, key_source="$K"), bw.BatchLineExpired)
    assert "not billed" in str(bw.line_error(expired, key_source="$K"))


def test_custom_id_is_read_without_parsing_a_whole_line():
    big = {"id": "batch_req_1", "custom_id": "job-7", "response": {"status_code": 200, "body": {"x": "A" * 100000}}}
    assert bw.custom_id_of(json.dumps(big).encode()) == "job-7"
    odd = {"response": {"status_code": 200}, "custom_id": "late"}  # custom_id after the body: parsed whole
    assert bw.custom_id_of(json.dumps(odd).encode()) == "late"
    assert bw.parse_batch({"id": "b", "object": "batch", "status": "expired"}).final
    with pytest.raises(BackendUnavailable):
        bw.parse_batch({"id": "b", "object": "file"})


def test_usage_is_read_from_the_end_of_a_line():
    usage = {"input_tokens": 9, "input_tokens_details": {"image_tokens": 7, "text_tokens": 2}, "output_tokens": 5}
    body = {"data": [{"b64_json": "A" * 50000}], "usage": usage}
    line = {
        "id": "r",
        "custom_id": "c",
        "response": {"status_code": 200, "request_id": "q", "body": body},
        "error": None,
    }
    assert bw.usage_of(json.dumps(line).encode()) == usage
    early = {
        "custom_id": "c",
        "response": {"status_code": 200, "body": {"usage": usage, "data": [{"b64_json": "A" * 9000}]}},
    }
    assert bw.usage_of(json.dumps(early).encode()) == usage  # not near the end: the line is parsed whole
    b = lane()
    assert b.line_cost(json.dumps(line).encode()) == Decimal(2 * 2.5 + 7 * 4 + 5 * 15) / 10**6


def test_request_line_is_the_json_edit_body():
    body = wire.json_body(make_request(mask=False), "gpt-image-2", takes_input_fidelity=False)
    line = json.loads(bw.request_line("j", body))
    assert line == {"custom_id": "j", "method": "POST", "url": "/v1/images/edits", "body": body}


def test_a_refused_download_never_repeats_a_gateway_key(monkeypatch):
    """An Azure-style key (not `sk-` shaped) echoed back by a refused `GET /files/{id}/content` is scrubbed from
    the error and from the provider's answer attached to it, as on every other call."""
    import io

    azure_key = "azure0123456789abcdefSECRET"
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", azure_key)
    echo = {"error": {"message": f"Access denied for key {azure_key}", "type": "invalid_request_error"}}
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401, json=echo)))
    b = lane(client=client, auth_style="api-key", api_key_env="AZURE_OPENAI_API_KEY")
    with pytest.raises(BackendMisconfigured) as info:
        b.download("file-out", io.BytesIO())
    assert azure_key not in str(info.value) and azure_key not in repr(info.value.upstream.body)
