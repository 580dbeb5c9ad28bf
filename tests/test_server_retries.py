"""Issue 13, items 2 and 3, with the official SDK (sync and async) against `editroute serve` on loopback: an SDK
retry joins only its own first try; an Idempotency-Key behaves as a key; one retry budget per client request,
the provider's retry-after passed on, and every 429 answered within the stated bound."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import httpx2
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from backends.standins import FakeOpenAIServer
from pipeline.routing import load_policy
from pipeline.run import job_key
from pipeline.serve import EditService, ServeSettings, Who, parse_form
from pipeline.serve.identity import Tries
from pipeline.serve.wire import ApiError, Form, Upload
from tests.imagery import image_bytes
from tests.serve_helpers import KEY, UPSTREAM_KEY, png, run_threads, serving, write_policy


class LoseFirstTry(httpx2.BaseTransport):
    """The client's network loses its first attempt before it reaches the server (the SDK then retries)."""

    def __init__(self) -> None:
        self.inner, self.lost = httpx2.HTTPTransport(), 0

    def handle_request(self, request):
        if self.lost == 0:
            self.lost += 1
            raise httpx2.ConnectError("lost on the way", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class LoseFirstTryAsync(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner, self.lost = httpx2.AsyncHTTPTransport(), 0

    async def handle_async_request(self, request):
        if self.lost == 0:
            self.lost += 1
            raise httpx2.ConnectError("lost on the way", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def sync_edit(url: str, transport=None, **kwargs):
    http = httpx2.Client(transport=transport) if transport is not None else None
    sdk = OpenAI(base_url=url, api_key=KEY, max_retries=2, http_client=http)
    raw = sdk.images.with_raw_response.edit(image=png(), prompt="the same photo and prompt", **kwargs)
    return raw.parse(), raw.headers


def async_edit(url: str, transport=None, **kwargs):
    async def go():
        http = httpx2.AsyncClient(transport=transport) if transport is not None else None
        sdk = AsyncOpenAI(base_url=url, api_key=KEY, max_retries=2, http_client=http)
        raw = await sdk.images.with_raw_response.edit(image=png(), prompt="the same photo and prompt", **kwargs)
        return raw.parse(), raw.headers

    return asyncio.run(go())


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(api_key=UPSTREAM_KEY) as srv:
        yield srv


# ---- item 2: retry identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_an_identical_later_request_whose_first_try_was_lost_is_a_new_edit(tmp_path, upstream, flavour):
    """R1 succeeds and is answered. Later the same photo and prompt is sent again; its first try never reaches the
    server and the SDK retries it (x-stainless-retry-count: 1). That retry is a new edit, run and billed: it must
    not get R1's stored image."""
    edit, lose = (sync_edit, LoseFirstTry) if flavour == "sync" else (async_edit, LoseFirstTryAsync)
    with serving(write_policy(tmp_path, upstream), tmp_path / "out") as (url, service):
        _, first = edit(url)
        calls = len(upstream.requests)
        transport = lose()
        result, later = edit(url, transport)
        assert transport.lost == 1 and len(result.data) == 1
        assert len(upstream.requests) == calls + 1  # a new edit was made
        assert later["x-editroute-reused"] == "false" and later["x-editroute-job-id"] != first["x-editroute-job-id"]
        assert later["x-editroute-billed-usd"] == later["x-editroute-cost-usd"] != "0"
        assert service.wait_idle()
        assert service.ledger.total_spent() == Decimal(first["x-editroute-cost-usd"]) + Decimal(
            later["x-editroute-cost-usd"]
        )


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_retry_after_a_client_timeout_joins_its_own_first_try(tmp_path, flavour):
    """The first try reaches the server, the client gives up waiting and retries: the retry gets that job's answer
    (the provider called and billed once)."""
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, latency_s=1.2) as slow:
        with serving(write_policy(tmp_path, slow), tmp_path / "out") as (url, service):
            edit = sync_edit if flavour == "sync" else async_edit
            result, headers = edit(url, timeout=0.7)
            assert len(result.data) == 1 and headers["x-editroute-reused"] == "true"
            assert headers["x-editroute-billed-usd"] == "0" and len(slow.requests) == 1
            assert service.wait_idle() and len(list(service.ledger.jobs())) == 1


def test_the_join_window_and_an_answered_try(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tries = Tries()
    key = tries.first_try("http:abc:")
    assert tries.joinable("http:abc:", 5.0) == key
    clock[0] += 6.0
    assert tries.joinable("http:abc:", 5.0) == ""  # too old for this retry: a new job
    assert tries.joinable("http:abc:", 10.0) == key
    tries.answered(key)
    assert tries.joinable("http:abc:", 10.0) == ""  # answered: whoever retries now sent a new request
    assert tries.joinable("http:other:", 10.0) is None  # never seen here: ask the ledger
    assert ServeSettings().join_window_s(1, 0.7, 0.1) == pytest.approx(0.7 + 8 + 1 + 0.1)
    assert ServeSettings().join_window_s(2, None, 0.1) == ServeSettings().retry_window_s == 1220.0


def test_after_a_restart_a_retry_joins_only_an_unfinished_job(tmp_path):
    """The ledger stands in for the lost memory of first tries: a job that did not finish is joined; a done one
    may have been answered before the restart, so the retry runs anew."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("backends:\n  fast: {kind: function, cost_per_image: 0.03}\nquality: {fast: 0.7}\n")
    form = Form(fields={"prompt": ["restart"]}, files=[Upload("image", image_bytes(), "a.png", "image/png")])
    who, retry = Who(client="c1"), Who(client="c1", retry=1)
    first = EditService(load_policy(policy), tmp_path / "out")
    unfinished = first.prepare(parse_form(form), who)
    first.ledger.claim(unfinished.job.id, unfinished.key, job_key(unfinished.job))
    first.ledger.fail(unfinished.job.id, "the provider failed; the client never got an answer")
    first.close()
    second = EditService(load_policy(policy), tmp_path / "out")
    try:
        assert second.prepare(parse_form(form), retry).key == unfinished.key
        second.run(second.prepare(parse_form(form), retry))  # it finishes now
        assert second.prepare(parse_form(form), retry).key != unfinished.key
    finally:
        second.close()


def test_after_a_restart_a_reused_idempotency_key_stays_bound_to_its_first_request(tmp_path):
    """After a restart the ledger says what an Idempotency-Key is bound to: another body is refused, and that refusal
    does not rebind the key, so the first request sent again with it still gets its stored result."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("backends:\n  fast: {kind: function, cost_per_image: 0.03}\nquality: {fast: 0.7}\n")

    def form(prompt: str) -> Form:
        return Form(fields={"prompt": [prompt]}, files=[Upload("image", image_bytes(), "a.png", "image/png")])

    who = Who(idempotency_key="order-1234")
    first = EditService(load_policy(policy), tmp_path / "out")
    done = first.prepare(parse_form(form("the first request")), who)
    assert first.run(done).ok
    first.close()
    second = EditService(load_policy(policy), tmp_path / "out")
    try:
        with pytest.raises(ApiError) as info:
            second.prepare(parse_form(form("another request")), who)
        assert info.value.code == "idempotency_key_reused"
        again = second.prepare(parse_form(form("the first request")), who)
        assert again.key == done.key and second.run(again).reused
    finally:
        second.close()


def test_an_idempotency_key_behaves_as_a_key(tmp_path, upstream):
    with serving(write_policy(tmp_path, upstream), tmp_path / "out", keys=f"{KEY},{KEY}-b") as (url, service):
        key = {"Idempotency-Key": "order-1234"}
        first, h1 = sync_edit(url, extra_headers=key)
        again, h2 = sync_edit(url, extra_headers=key)
        assert again.data[0].b64_json == first.data[0].b64_json and h2["x-editroute-reused"] == "true"
        assert h1["x-editroute-job-id"] == h2["x-editroute-job-id"] and h2["x-editroute-billed-usd"] == "0"
        sdk = OpenAI(base_url=url, api_key=KEY)
        for change in (
            {"prompt": "something else"},
            {"prompt": "the same photo and prompt", "model": "gpt-image-2.6-flare"},
        ):
            with pytest.raises(openai.BadRequestError) as info:
                sdk.images.edit(image=png(), extra_headers=key, **change)
            assert (
                info.value.code == "idempotency_key_reused" and info.value.response.headers["x-should-retry"] == "false"
            )
        other_caller = OpenAI(base_url=url, api_key=KEY + "-b")  # a key is scoped to its caller
        other = other_caller.images.with_raw_response.edit(image=png(), prompt="another caller", extra_headers=key)
        assert other.headers["x-editroute-reused"] == "false"


def test_the_same_idempotency_key_sent_twice_at_once_runs_once(tmp_path):
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, latency_s=0.5) as slow:
        with serving(write_policy(tmp_path, slow), tmp_path / "out") as (url, _):
            results = run_threads(3, lambda i: sync_edit(url, extra_headers={"Idempotency-Key": "k-1"}))
            assert len(slow.requests) == 1 and len({r[0].data[0].b64_json for r in results}) == 1
            assert sorted(r[1]["x-editroute-billed-usd"] == "0" for r in results) == [False, True, True]


# ---- item 3: one retry budget, the provider's retry-after, a bounded 429 ------------------------------------


def calls_for(server: FakeOpenAIServer, prompt: str) -> int:
    return sum(1 for r in server.edit_requests if r.fields.get("prompt") == prompt)


def test_a_long_retry_after_is_passed_on_at_once(tmp_path):
    """Upstream says retry-after: 5: the server does not sleep through it (the SDK will), it answers 429 at once with
    the provider's headers, and it called the provider once."""
    storm = {"status": 429, "retry_after": 5, "retry_after_ms": 5000, "x-ratelimit-remaining-requests": 0}
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, script=[storm] * 3) as api:
        with serving(write_policy(tmp_path, api, api={"max_retries": 2}), tmp_path / "out") as (url, service):
            sdk = OpenAI(base_url=url, api_key=KEY, max_retries=0)
            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as info:
                sdk.images.edit(image=png(), prompt="storm")
            took = time.monotonic() - started
            headers = info.value.response.headers
            assert (headers["retry-after"], headers["retry-after-ms"]) == ("5", "5000")
            assert headers["x-ratelimit-remaining-requests"] == "0" and info.value.code == "rate_limit_exceeded"
            assert took < 2.0 and calls_for(api, "storm") == 1
            assert service.wait_idle() and service.ledger.total_spent() == 0


def test_short_waits_are_absorbed_once_within_the_budget(tmp_path):
    """retry-after-ms: 100 is short: the backend retries (max_retries: 2), and that is the only retry loop: 3
    upstream calls for the client's one request, never 9."""
    blip = {"status": 429, "retry_after_ms": 100}
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, script=[blip] * 5) as api:
        with serving(write_policy(tmp_path, api, api={"max_retries": 2}), tmp_path / "out") as (url, _):
            sdk = OpenAI(base_url=url, api_key=KEY, max_retries=0)
            with pytest.raises(openai.RateLimitError) as info:
                sdk.images.edit(image=png(), prompt="blip")
            assert calls_for(api, "blip") == 3 and info.value.response.headers["retry-after-ms"] == "100"
            result = sdk.images.edit(image=png(), prompt="blip again")  # 2 more 429s, then it goes through
            assert len(result.data) == 1 and calls_for(api, "blip again") == 3


def test_a_429_storm_every_request_ends_within_the_bound(tmp_path):
    """16 clients at once against a provider that takes 3 edits a minute: each request ends 200 or 429 (with the
    provider's retry-after) within max_retry_wait_s + 1.5 s, and makes at most max_retries + 1 upstream calls."""
    settings = ServeSettings(max_retry_wait_s=1.0)
    with FakeOpenAIServer(api_key=UPSTREAM_KEY, rate_limit_rpm=3) as api:
        with serving(write_policy(tmp_path, api, api={"max_retries": 2}), tmp_path / "out", settings=settings) as (
            url,
            _,
        ):
            barrier = threading.Barrier(16)

            def one(i: int):
                sdk = OpenAI(base_url=url, api_key=KEY, max_retries=0)
                barrier.wait()
                started = time.monotonic()
                try:
                    sdk.images.edit(image=png(), prompt=f"storm {i}")
                    return 200, None, time.monotonic() - started
                except openai.RateLimitError as exc:
                    return 429, exc.response.headers.get("retry-after"), time.monotonic() - started

            results = run_threads(16, one)
            assert sorted(r[0] for r in results) == [200] * 3 + [429] * 13
            assert all(r[1] is not None and int(r[1]) > 1 for r in results if r[0] == 429)  # the provider's wait
            assert max(r[2] for r in results) < settings.max_retry_wait_s + 1.5
            assert all(calls_for(api, f"storm {i}") <= 3 for i in range(16))
