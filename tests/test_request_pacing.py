"""`requests_per_minute` counts upstream HTTP requests, not jobs: Gemini's n calls and Firefly's uploads, submits
and status polls each count, paced by the backend (one pacer per provider account), and the runner does not pace
such a backend a second time per job."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from backends.adobe.backend import FireflyEditBackend
from backends.adobe.backend import Settings as FireflySettings
from backends.errors import RateLimited
from backends.google.backend import GeminiEditBackend
from backends.google.backend import Settings as GeminiSettings
from backends.hosted_http import RequestPacer, shared_pacer
from backends.openai import OpenAIEditBackend
from backends.openai import Settings as OpenAISettings
from backends.standins.firefly_server import FakeFireflyServer
from backends.standins.gemini_server import FakeGeminiServer
from pipeline.run.executors import limits_for
from tests.backend_contract import make_request

GKEY = "AIzaPacing-SECRET-0a1b2c"
FF_ID, FF_SECRET = "ff-pacing-client", "ff-pacing-SECRET-3d4e5f"


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GKEY)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", FF_ID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", FF_SECRET)


def test_pacer_spaces_requests_evenly_from_any_number_of_callers():
    now = [100.0]
    pacer = RequestPacer(4, clock=lambda: now[0])  # Adobe's default: one request per 15 s
    slept: list[float] = []
    waits = [pacer.acquire(slept.append) for _ in range(4)]
    assert waits == [0.0, 15.0, 30.0, 45.0] and slept == [15.0, 30.0, 45.0]
    now[0] += 120.0  # idle for two minutes: no credit is saved up (no burst)
    assert pacer.acquire(slept.append) == 0.0 and pacer.acquire(slept.append) == 15.0


def test_one_pacer_per_account_at_the_stricter_limit():
    a = shared_pacer(("firefly", "https://ff.example", "$ID"), 10)
    b = shared_pacer(("firefly", "https://ff.example", "$ID"), 4)
    assert a is b and a.per_minute == 4
    assert shared_pacer(("firefly", "https://ff.example", "$OTHER_ID"), 10) is not a
    assert shared_pacer(("firefly", "https://ff.example", "$ID"), None) is None


def test_gemini_paces_each_of_a_jobs_n_calls(creds):
    slept: list[float] = []
    with FakeGeminiServer(api_key=GKEY) as srv:
        backend = GeminiEditBackend(
            "gemini", GeminiSettings(base_url=srv.base_url, requests_per_minute=60), sleep=slept.append
        )
        result = backend.edit(make_request(n=3))
    assert len(srv.calls) == 3 and len(result.extras["calls"]) == 3
    assert len(slept) == 2 and sorted(round(s) for s in slept) == [1, 2]  # 1 s apart at 60 per minute


def test_firefly_paces_uploads_submits_and_polls_against_adobes_limit(creds):
    """The stand-in enforces Adobe's per-organisation limit on every API request; a masked fill is 2 uploads, a
    submit and its polls. Paced per request it never meets a 429; paced per job (as before) it does."""
    window_s, per_window = 0.6, 3  # 300 per minute, scaled down in time
    with FakeFireflyServer(
        client_id=FF_ID, client_secret=FF_SECRET, rate_limit_rpm=per_window, rate_window_s=window_s
    ) as srv:
        paced = FireflyEditBackend(
            "firefly",
            FireflySettings(
                base_url=srv.base_url,
                token_url=srv.token_url,
                poll_interval_s=0.01,
                price_per_operation_usd=Decimal("0.06"),
                requests_per_minute=per_window * 60 / window_s * 0.8,  # a margin for the loopback's jitter
            ),
        )
        t0 = time.monotonic()
        paced.edit(make_request())
        api = [r for r in srv.requests if r.kind not in ("token", "download")]
        assert len(api) >= 5 and all(r.status != 429 for r in api)
        assert time.monotonic() - t0 >= (len(api) - 1) * window_s / per_window  # they were spaced
        srv.requests.clear()
        unpaced = FireflyEditBackend(
            "firefly-unpaced",
            FireflySettings(
                base_url=srv.base_url,
                token_url=srv.token_url,
                poll_interval_s=0.01,
                price_per_operation_usd=Decimal("0.06"),
                requests_per_minute=None,
                client_id_env="FIREFLY_SERVICES_CLIENT_ID",
            ),
            sleep=lambda s: None,  # retries come at once: the limit is met
        )
        time.sleep(window_s)
        with pytest.raises(RateLimited):
            unpaced.edit(make_request())
        assert any(r.status == 429 for r in srv.requests)


def test_the_runner_leaves_pacing_to_backends_that_pace_their_requests(creds):
    gemini = GeminiEditBackend("gemini", GeminiSettings(base_url="http://127.0.0.1:9", requests_per_minute=30))
    firefly = FireflyEditBackend("firefly", FireflySettings(base_url="http://127.0.0.1:9"))
    openai = OpenAIEditBackend("openai", OpenAISettings(base_url="http://127.0.0.1:9/v1", requests_per_minute=30))
    assert limits_for(gemini).requests_per_minute is None and limits_for(firefly).requests_per_minute is None
    assert firefly.session.pacer is not None and firefly.session.pacer.per_minute == 4  # Adobe's default
    assert limits_for(openai).requests_per_minute == 30  # one request per job: paced per call by the runner
