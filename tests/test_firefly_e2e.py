"""End to end on 127.0.0.1: FireflyEditBackend against the Firefly + IMS stand-in, including a SIGKILL mid-poll."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends.adobe.backend import FireflyEditBackend, Settings
from backends.adobe.journal import FileJournal, MemoryJournal
from backends.base import EditRequest
from backends.errors import BackendMisconfigured, BackendUnavailable, ContentRejected, EditError
from backends.images import InputImage
from backends.standins.firefly_server import FakeFireflyServer
from tests.backend_contract import BackendContract, make_request
from tests.imagery import encode, mask_bytes

CID, SECRET = "ff-e2e-client", "ff-e2e-SECRET-5c4d3e2f1a"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", CID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", SECRET)


@pytest.fixture
def ff():
    with FakeFireflyServer(client_id=CID, client_secret=SECRET) as srv:
        yield srv


def backend_for(srv: FakeFireflyServer, slept: list | None = None, **settings) -> FireflyEditBackend:
    settings.setdefault("price_per_operation_usd", Decimal("0.06"))
    settings.setdefault("requests_per_minute", None)  # pacing has its own tests (test_request_pacing.py)
    return FireflyEditBackend(
        "firefly",
        Settings(base_url=srv.base_url, token_url=srv.token_url, poll_interval_s=0.01, **settings),
        sleep=slept.append if slept is not None else (lambda s: None),
    )


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def openai_edit_region(req: EditRequest) -> np.ndarray:
    return np.asarray(req.mask.open().getchannel("A")) == 0


class TestFireflyContract(BackendContract):
    @pytest.fixture
    def backend(self, ff):
        b = backend_for(ff)
        yield b
        b.close()

    @pytest.fixture
    def paid_calls(self, ff):
        return lambda: len(ff.submits())


# ---- mask polarity, proven by the stand-in --------------------------------------------------------


def test_the_mask_firefly_receives_is_white_exactly_where_the_openai_mask_is_transparent(ff):
    req = make_request()
    backend_for(ff).edit(req)
    (job,) = ff.jobs.values()
    _, data = ff.uploads[job.body["mask"]["source"]["uploadId"]]
    received = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert received.shape == (1024, 1024) and job.body["mask"]["invert"] is False
    expected = np.kron(openai_edit_region(req), np.ones((16, 16), dtype=bool))  # 64 -> 1024, nearest
    assert np.array_equal(received == 255, expected) and set(np.unique(received)) == {0, 255}


def test_fill_changes_pixels_exactly_where_the_openai_mask_was_transparent():
    """No paste-back, lossless answers, an input already at a fill size: what changed is what Firefly filled."""
    side = 1024
    x = np.arange(side, dtype=np.uint16)
    img = np.stack(
        [
            (x[None, :] * 255 // side).repeat(side, 0),
            (x[:, None] * 255 // side).repeat(side, 1),
            ((x[None, :] + x[:, None]) % 256),
        ],
        -1,
    ).astype(np.uint8)
    image = InputImage.from_bytes(encode(Image.fromarray(img), "png"), "big.png")
    mask = InputImage.from_bytes(mask_bytes(side, side, (100, 600, 420, 900)), "mask.png", field="mask")
    req = EditRequest(prompt="a blue vase", images=(image,), mask=mask, job_id="polarity")
    with FakeFireflyServer(client_id=CID, client_secret=SECRET, output_mime="image/png") as srv:
        result = backend_for(srv, paste_back=False).edit(req)
    changed = (pixels(result.images[0]) != img).any(-1)
    assert np.array_equal(changed, openai_edit_region(req))
    assert "pasted_back" not in result.extras and result.extras["fill_size"] == "1024x1024"


def test_default_fill_keeps_pixels_outside_the_mask_exact_although_firefly_answers_jpeg(ff):
    req = make_request(size="1536x1024")
    result = backend_for(ff).edit(req)
    assert result.size == "1536x1024" and result.extras["fill_size"] == "1152x896"
    assert result.extras["provider_format"] == "jpeg" and result.extras["pasted_back"] is True
    assert result.extras["cropped"].startswith("1152x768 at (0, 64)")  # the letterbox, cut off again
    req = make_request()
    result = backend_for(ff).edit(req)
    before, after, edit = pixels(req.images[0].read()), pixels(result.images[0]), openai_edit_region(req)
    assert np.array_equal(after[~edit], before[~edit]) and (after[edit] != before[edit]).any(-1).mean() > 0.9


# ---- the other modes and n -----------------------------------------------------------------------


def test_n6_fill_is_two_jobs_and_six_operations(ff):
    result = backend_for(ff).edit(make_request(n=6, seed=100))
    assert [len(j.body["seeds"]) for j in ff.jobs.values()] == [4, 2]
    assert sorted(s for j in result.extras["jobs"] for s in j["seeds"]) == list(range(100, 106))
    assert len(result.images) == 6 and result.extras["operations"] == 6 and result.cost_usd == Decimal("0.36")
    assert ff.count("upload") == 2  # the image and mask are uploaded once for both jobs


def test_maskless_instruct_edit_is_one_image5_job_per_image(ff):
    result = backend_for(ff).edit(make_request(mask=False, n=2, output_format="webp", output_compression=80))
    assert [r.kind for r in ff.submits()] == ["instruct", "instruct"] and len(result.images) == 2
    assert result.model == "firefly-image5" and result.extras["mask_mode"] == "none"
    assert Image.open(io.BytesIO(result.images[0])).format == "WEBP"


def test_expand_outpaints_to_the_requested_size(ff):
    result = backend_for(ff, maskless="expand").edit(make_request(mask=False, size="1536x1024"))
    (job,) = ff.jobs.values()
    assert job.kind == "expand" and job.body["size"] == {"width": 1536, "height": 1024}
    assert result.size == "1536x1024" and "resized" not in result.extras


# ---- failure modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "mask", "exc_type", "text"),
    [
        ("an unsafe-output scene", True, ContentRejected, "output_media_unsafe"),
        ("an unsafe-prompt scene", False, ContentRejected, "HTTP 451 prompt_unsafe"),
        ("a fail-job scene", True, BackendUnavailable, "failed: runtime_error"),
        ("a timeout-job scene", True, BackendUnavailable, "timeout: timeout_error"),
    ],
)
def test_content_policy_and_job_failures(ff, prompt, mask, exc_type, text):
    journal = MemoryJournal()
    with pytest.raises(exc_type, match=text):
        backend_for(ff).edit(make_request(prompt=prompt, mask=mask), journal=journal)
    assert journal.load() == []  # nothing left to resume: a rerun submits afresh


def test_submit_429_with_an_http_date_is_waited_then_accepted():
    slept: list[float] = []
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    with FakeFireflyServer(
        client_id=CID, client_secret=SECRET, submit_script=[{"status": 429, "retry_after": when}]
    ) as srv:
        backend_for(srv, slept).edit(make_request())
    assert [r.status for r in srv.requests if r.kind == "fill"] == [429, 202] and 1 < slept[0] <= 3


def test_dropped_submit_is_not_resent_and_dropped_polls_are():
    with FakeFireflyServer(client_id=CID, client_secret=SECRET, submit_script=["drop"]) as srv:
        with pytest.raises(BackendUnavailable, match="outcome unknown"):
            backend_for(srv).edit(make_request())
    assert srv.count("fill") == 1
    with FakeFireflyServer(client_id=CID, client_secret=SECRET, status_script=["drop", 503]) as srv:
        backend_for(srv).edit(make_request())
    assert [r.status for r in srv.requests if r.kind == "status"][-1] == 200 and len(srv.submits()) == 1


def test_quota_403_and_expired_tokens(ff):
    with FakeFireflyServer(
        client_id=CID, client_secret=SECRET, submit_script=[{"status": 403, "access_error": "quota_exhausted"}]
    ) as srv:
        with pytest.raises(BackendMisconfigured, match="quota is used up"):
            backend_for(srv).edit(make_request())
    backend = backend_for(ff)
    backend.edit(make_request())
    ff.expire_tokens()  # e.g. revoked, or IMS restarted: the cached token now answers 401
    backend.edit(make_request())
    assert len(ff.issued) == 2 and [r.status for r in ff.requests if r.kind == "upload"][2] == 401


def test_bad_client_credentials_are_config_errors(ff, monkeypatch):
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", "wrong-secret-123")
    with pytest.raises(BackendMisconfigured, match="invalid_client: invalid client_secret") as info:
        backend_for(ff).edit(make_request())
    assert "wrong-secret-123" not in str(info.value) and ff.count("upload") == 0


def test_expired_result_urls(ff):
    with FakeFireflyServer(client_id=CID, client_secret=SECRET, url_ttl_s=0) as srv:
        with pytest.raises(BackendUnavailable, match="expired before they could be downloaded .*billed"):
            backend_for(srv).edit(make_request())
    assert [r.status for r in srv.requests if r.kind == "download"] == [403, 403]


# ---- crash safety --------------------------------------------------------------------------------


def test_resume_from_a_known_job_submits_nothing(ff):
    journal = MemoryJournal()
    first = backend_for(ff).edit(make_request(n=2), journal=journal)
    before = (len(ff.submits()), ff.count("upload"))
    again = backend_for(ff).edit(make_request(n=2), journal=journal)  # a new process would build a new backend
    assert (len(ff.submits()), ff.count("upload")) == before == (1, 2)
    assert again.extras["jobs"][0]["resumed"] is True and again.cost_usd == first.cost_usd


CHILD = textwrap.dedent("""
    import sys
    from decimal import Decimal
    from backends.adobe.backend import FireflyEditBackend, Settings
    from backends.adobe.journal import FileJournal
    from tests.backend_contract import make_request
    base, token_url, journal = sys.argv[1:4]
    backend = FireflyEditBackend("firefly", Settings(base_url=base, token_url=token_url, poll_interval_s=0.02,
                                                     max_poll_interval_s=0.02, price_per_operation_usd=Decimal(1),
                                                     requests_per_minute=None))
    backend.edit(make_request(n=2), journal=FileJournal(journal))
    print("finished", flush=True)
""")


def test_sigkill_while_polling_then_rerun_submits_nothing_twice(ff, tmp_path):
    ff.polls_to_finish = 10**9  # the job runs "forever" while the first process polls it
    journal = tmp_path / "job.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ff.base_url, ff.token_url, str(journal)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while ff.count("status") < 3 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert len(ff.submits()) == 1 and json.loads(journal.read_text())[0]["data"]["mode"] == "fill"
    ff.polls_to_finish = 1  # the job has finished meanwhile
    result = backend_for(ff).edit(make_request(n=2), journal=FileJournal(journal))
    assert len(ff.submits()) == 1 and ff.count("upload") == 2  # nothing submitted or uploaded twice
    assert len(result.images) == 2 and result.extras["jobs"][0]["resumed"] is True


# ---- secrets -------------------------------------------------------------------------------------


def test_secret_and_tokens_never_appear_in_logs_results_or_errors(ff, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    backend = backend_for(ff)
    seen += [repr(backend), repr(backend.settings), repr(backend.tokens), repr(ff)]
    result = backend.edit(make_request())
    seen += [repr(result), repr(result.extras)]
    ff.expire_tokens()
    for bad in [
        make_request(prompt="unsafe-output"),
        make_request(mask=False, prompt="unsafe-prompt"),
        make_request(n=0),
    ]:
        try:
            backend.edit(bad)
        except EditError as exc:
            seen += [str(exc), repr(exc), repr(exc.__dict__), repr(exc.__reduce__())]
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", SECRET + "x")
    try:
        backend_for(ff).edit(make_request())
    except EditError as exc:
        seen.append(str(exc))
    seen += [caplog.text] + [r.getMessage() + repr(r.args) for r in caplog.records]
    assert any("HTTP Request: POST" in s for s in seen) and len(ff.issued) == 2
    secrets = [SECRET, *ff.issued]
    assert [s[:200] for s in seen if any(x in s for x in secrets)] == []
