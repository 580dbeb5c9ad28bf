"""FireflyEditBackend against an httpx.MockTransport handler answering with Adobe's real bodies, plus the pure
wire functions (sizes, masks, bodies, job states, error mapping)."""

from __future__ import annotations

import email.utils
import io
import json
import time
from decimal import Decimal
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
from PIL import Image

from backends.adobe import wire
from backends.adobe.backend import FireflyEditBackend, Settings
from backends.adobe.job_plan import split_parts
from backends.adobe.journal import JobRef, MemoryJournal
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    ContentRejected,
    InvalidRequest,
    OutcomeUnknown,
    RateLimited,
)
from tests.backend_contract import make_request
from tests.imagery import encode

CID, SECRET = "ff-unit-client-id", "ff-unit-SECRET-9a8b7c6d"
BASE = "https://firefly.test"


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", CID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", SECRET)


def jpeg(w: int = 1024, h: int = 1024) -> bytes:
    return encode(Image.new("RGB", (w, h), (200, 40, 40)), "jpeg")


class FireflyMock:
    """A MockTransport handler: IMS, storage, fill/expand/v4 submit, status, S3 download, with overrides per kind."""

    def __init__(self, **overrides):
        self.overrides = {k: list(v) for k, v in overrides.items()}  # kind -> answers consumed in order
        self.requests: list[tuple[str, httpx.Request]] = []
        self.tokens = 0

    def kind(self, r: httpx.Request) -> str:
        p = r.url.path
        return (
            "token"
            if p == "/ims/token/v3"
            else "upload"
            if p == "/v2/storage/image"
            else "fill"
            if p.endswith("fill-async")
            else "expand"
            if p.endswith("expand-async")
            else "instruct"
            if p.startswith("/v4")
            else "status"
            if p.startswith("/v3/status")
            else "download"
        )

    def __call__(self, r: httpx.Request) -> httpx.Response:
        kind = self.kind(r)
        self.requests.append((kind, r))
        if self.overrides.get(kind):
            answer = self.overrides[kind].pop(0)
            if isinstance(answer, Exception):
                raise answer
            if answer is not None:
                return answer
        if kind == "token":
            self.tokens += 1
            return httpx.Response(
                200, json={"access_token": f"tok-{self.tokens}", "token_type": "bearer", "expires_in": 86399}
            )
        if kind == "upload":
            return httpx.Response(200, json={"images": [{"id": f"up-{len(self.requests)}"}]})
        if kind in ("fill", "expand"):
            return httpx.Response(
                202,
                json={
                    "jobId": "urn:ff:jobs:x:1",
                    "statusUrl": f"{BASE}/v3/status/urn:ff:jobs:x:1",
                    "cancelUrl": f"{BASE}/v3/cancel/urn:ff:jobs:x:1",
                },
            )
        if kind == "instruct":
            return httpx.Response(200, json={"links": {"result": {"href": f"{BASE}/v3/status/job-5"}}, "progress": 0})
        if kind == "status":
            return httpx.Response(
                200,
                json={
                    "status": "succeeded",
                    "jobId": "urn:ff:jobs:x:1",
                    "result": {"outputs": [{"seed": 7, "image": {"url": "https://s3.test/out0?X-Amz-Expires=3600"}}]},
                },
            )
        return httpx.Response(200, content=jpeg(), headers={"content-type": "image/jpeg"})

    def of(self, kind: str) -> list[httpx.Request]:
        return [r for k, r in self.requests if k == kind]


def make_backend(handler, sleeps: list | None = None, clock=None, **settings) -> FireflyEditBackend:
    kw = {"clock": clock} if clock else {}
    settings.setdefault("requests_per_minute", None)  # pacing has its own tests (test_request_pacing.py)
    return FireflyEditBackend(
        "firefly",
        Settings(base_url=BASE, token_url=f"{BASE}/ims/token/v3", **settings),
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=sleeps.append if sleeps is not None else (lambda s: None),
        **kw,
    )


def ff_error(status: int, code: str, message: str = "x", headers: dict | None = None, **extra) -> httpx.Response:
    return httpx.Response(status, json={"error_code": code, "message": message, **extra}, headers=headers or {})


# ---- pure functions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "h", "size"),
    [
        (1024, 1024, (1024, 1024)),
        (64, 64, (1024, 1024)),
        (1536, 1024, (1152, 896)),
        (1024, 1536, (896, 1152)),
        (2000, 1000, (1344, 768)),
        (4000, 2000, (2688, 1536)),
        (4000, 4000, (2048, 2048)),
    ],
)
def test_nearest_fill_size(w, h, size):
    assert wire.nearest_fill_size(w, h) == size


def test_resolution_level_and_reference_size():
    assert [wire.resolution_level(*s) for s in ((1024, 1024), (1536, 1024), (3000, 3000))] == ["1MP", "2.4MP", "4MP"]
    assert wire.reference_size(64, 64) == (512, 512) and wire.reference_size(4096, 4096) == (2048, 2048)
    assert wire.reference_size(1000, 700) == (1000, 700)


def test_letterbox_protects_the_padding_and_keeps_the_edit_region():
    canvas = Image.new("RGB", (150, 100), (1, 2, 3))
    repaint = Image.new("L", (150, 100), 0)
    repaint.paste(255, (0, 0, 15, 10))
    image, mask, box = wire.letterbox(canvas, repaint, (1152, 896))
    assert box == (0, 64, 1152, 832)  # 150x100 scaled x7.68 fits the width
    m = np.asarray(mask)
    assert (m[:64] == 0).all() and (m[832:] == 0).all()  # padding: protected (black)
    assert m[64:141, :115].min() == 255 and m[64 + 80, 200] == 0  # the edit region, enlarged, white


def test_split_parts_and_unique_seeds():
    assert split_parts("fill", 10, 5) == [(4, (5, 6, 7, 8)), (4, (9, 10, 11, 12)), (2, (13, 14))]
    assert split_parts("instruct", 3, None) == [(1, None)] * 3
    assert split_parts("expand", 1, 2**63 - 1)[0][1] == ((2**63 - 1) % 2**31,)


def test_job_states_and_accept_shapes():
    assert wire.parse_accept({"jobId": "j", "statusUrl": "https://a/v3/status/j"}) == ("j", "https://a/v3/status/j")
    assert wire.parse_accept({"links": {"result": {"href": "https://a/v3/status/k"}}}) == ("k", "https://a/v3/status/k")
    assert not wire.parse_job({"status": "running", "jobId": "j"}).finished
    failed = wire.parse_job({"status": "failed", "jobId": "j", "error_code": "output_media_unsafe", "message": "no"})
    assert isinstance(wire.job_error("j", failed), ContentRejected)
    assert isinstance(wire.job_error("j", wire.parse_job({"status": "timeout", "jobId": "j"})), BackendUnavailable)


def test_retry_after_seconds_or_http_date():
    assert wire.retry_after({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < wire.retry_after({"retry-after": date}) <= 30


# ---- the calls on the wire -----------------------------------------------------------------------


def test_token_upload_submit_poll_download_on_the_wire():
    mock = FireflyMock()
    result = make_backend(mock, locale="en-US").edit(make_request(prompt="a red ball", seed=41))
    assert [k for k, _ in mock.requests] == ["token", "upload", "upload", "fill", "status", "download"]
    form = {k: v[0] for k, v in parse_qs(mock.of("token")[0].content.decode()).items()}
    assert form == {
        "grant_type": "client_credentials",
        "client_id": CID,
        "client_secret": SECRET,
        "scope": "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis",
    }
    for kind in ("upload", "fill", "status"):
        r = mock.of(kind)[0]
        assert r.headers["authorization"] == "Bearer tok-1" and r.headers["x-api-key"] == CID
    assert [r.headers["content-type"] for r in mock.of("upload")] == ["image/png", "image/png"]
    body = json.loads(mock.of("fill")[0].content)
    assert body == {
        "image": {"source": {"uploadId": "up-2"}},
        "mask": {"source": {"uploadId": "up-3"}, "invert": False},
        "prompt": "a red ball",
        "numVariations": 1,
        "seeds": [41],
        "size": {"width": 1024, "height": 1024},
        "promptBiasingLocaleCode": "en-US",
    }
    download = mock.of("download")[0]
    assert "authorization" not in download.headers and "x-api-key" not in download.headers  # no token to S3
    assert result.seed == 7 and result.size == "64x64" and result.model == "firefly-fill"


def test_instruct_edit_goes_to_v4_with_image5_header():
    mock = FireflyMock()
    make_backend(mock).edit(make_request(mask=False, size="1536x1024"))
    r = mock.of("instruct")[0]
    assert r.headers["x-model-version"] == "image5"
    body = json.loads(r.content)
    assert body["referenceBlobs"] == [{"source": {"uploadId": "up-2"}, "usage": "general"}]
    assert body["numVariations"] == 1 and body["resolutionLevel"] == "2.4MP" and "aspectRatio" not in body
    with Image.open(io.BytesIO(mock.of("upload")[0].content)) as ref:
        assert ref.size == (512, 512)  # a 64x64 input is scaled into Image 5's reference area


def test_token_is_cached_then_refreshed_before_expiry():
    now = [0.0]
    mock = FireflyMock()
    backend = make_backend(mock, clock=lambda: now[0])
    backend.edit(make_request())
    backend.edit(make_request())
    assert mock.tokens == 1
    now[0] = 86399 - 200.0  # inside the refresh margin
    backend.edit(make_request())
    assert mock.tokens == 2


def test_401_refreshes_the_token_once_then_is_a_config_error():
    mock = FireflyMock(upload=[ff_error(401, "401013", "Oauth token is not valid")])
    make_backend(mock).edit(make_request())
    assert mock.tokens == 2 and mock.of("upload")[1].headers["authorization"] == "Bearer tok-2"
    mock = FireflyMock(upload=[ff_error(401, "401013", "Oauth token is not valid")] * 2)
    with pytest.raises(BackendMisconfigured, match="refused the IMS token"):
        make_backend(mock).edit(make_request())


def test_ims_refusal_is_a_config_error_without_the_secret():
    mock = FireflyMock(
        token=[httpx.Response(400, json={"error": "invalid_client", "error_description": f"bad secret {SECRET}"})]
    )
    with pytest.raises(BackendMisconfigured, match="invalid_client") as info:
        make_backend(mock).edit(make_request())
    assert SECRET not in str(info.value) and "$FIREFLY_SERVICES_CLIENT_ID" in str(info.value)
    assert mock.of("upload") == []


# ---- errors, retries and money -------------------------------------------------------------------

ERRORS = [
    ("429 long", "fill", [ff_error(429, "rate_limited", headers={"retry-after": "600"})], RateLimited, 1),
    (
        "quota",
        "fill",
        [ff_error(403, "access_error", headers={"x-access-error": "quota_exhausted"})],
        BackendMisconfigured,
        1,
    ),
    (
        "422",
        "fill",
        [ff_error(422, "validation_error", validation_errors=[{"loc": ["body", "size"], "msg": "bad"}])],
        InvalidRequest,
        1,
    ),
    ("451", "instruct", [ff_error(451, "prompt_unsafe")], ContentRejected, 1),
    ("500 submit", "fill", [ff_error(500, "runtime_error")] * 3, BackendUnavailable, 3),
    ("lost answer", "fill", [httpx.ReadTimeout("read timed out")], OutcomeUnknown, 1),
    ("never sent", "fill", [httpx.ConnectError("refused")] * 3, BackendUnavailable, 3),
]


@pytest.mark.parametrize(
    ("kind", "answers", "exc_type", "submits"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_submit_errors_map_and_are_retried_only_when_safe(kind, answers, exc_type, submits):
    mock = FireflyMock(**{kind: answers})
    with pytest.raises(exc_type) as info:
        make_backend(mock).edit(make_request(mask=kind == "fill"))
    assert type(info.value) is exc_type and len(mock.of(kind)) == submits
    assert "contract-job" in str(info.value) and SECRET not in str(info.value) and "tok-1" not in str(info.value)


def test_lost_submit_answer_says_the_outcome_is_unknown():
    mock = FireflyMock(fill=[httpx.ReadTimeout("read timed out")])
    with pytest.raises(BackendUnavailable, match="may have been created and billed: outcome unknown"):
        make_backend(mock).edit(make_request())


@pytest.mark.parametrize(
    ("accepted", "text"),
    [
        ({"jobId": "urn:ff:jobs:x:1"}, "names no status URL"),
        ({"jobId": "j", "statusUrl": "https://elsewhere.test/v3/status/j"}, "unexpected host"),
    ],
    ids=["no status URL", "foreign status host"],
)
def test_an_accepted_submit_that_cannot_be_followed_is_a_possible_charge(accepted, text):
    """Firefly made the job (and will bill it) even when its 202 cannot be followed: the outcome is unknown, so the
    runner keeps a possible charge and sends the job nowhere else, instead of settling it as free."""
    mock = FireflyMock(fill=[httpx.Response(202, json=accepted)])
    with pytest.raises(OutcomeUnknown, match=text):
        make_backend(mock).edit(make_request())
    assert len(mock.of("fill")) == 1 and mock.of("status") == []


def test_429_retry_after_is_waited_then_submitted():
    sleeps: list[float] = []
    mock = FireflyMock(
        fill=[ff_error(429, "rate_limited", headers={"retry-after": "2", "x-access-rate-limit-level": "org"})]
    )
    make_backend(mock, sleeps).edit(make_request())
    assert len(mock.of("fill")) == 2 and sleeps[0] == 2.0


def test_polling_honours_retry_after_and_backs_off_otherwise():
    sleeps: list[float] = []
    running = httpx.Response(200, json={"status": "running", "jobId": "j"})
    mock = FireflyMock(
        status=[
            httpx.Response(200, json={"status": "pending", "jobId": "j"}, headers={"retry-after": "3"}),
            running,
            running,
            None,
        ]
    )
    make_backend(mock, sleeps).edit(make_request())
    assert sleeps == [3.0, 1.5, 2.25]  # the server's wait; then 1 s x 1.5 per poll (the first wait was the 1 s)


def test_failed_job_is_content_rejected_and_dropped_from_the_journal():
    mock = FireflyMock(
        status=[
            httpx.Response(
                200, json={"status": "failed", "jobId": "j", "error_code": "output_media_unsafe", "message": "unsafe"}
            )
        ]
    )
    journal = MemoryJournal()
    with pytest.raises(ContentRejected, match="output_media_unsafe"):
        make_backend(mock).edit(make_request(), journal=journal)
    assert journal.load() == []


def test_a_failed_part_still_settles_the_parts_firefly_made():
    """n=5 is two Firefly jobs (4 + 1 variations): when the second fails, the first was made and billed all the
    same, and the error says so instead of the attempt being settled as free."""
    failed = httpx.Response(
        200, json={"status": "failed", "jobId": "j", "error_code": "output_media_unsafe", "message": "unsafe"}
    )
    backend = make_backend(FireflyMock(status=[None, failed]))
    with pytest.raises(ContentRejected, match="output_media_unsafe") as info:
        backend.edit(make_request(n=5))
    assert info.value.spent_usd == backend.estimate(make_request(n=4)).usd


def test_poll_timeout_keeps_the_job_in_the_journal():
    now = [0.0]
    mock = FireflyMock(status=[httpx.Response(200, json={"status": "running", "jobId": "j"})] * 50)
    journal = MemoryJournal()
    backend = make_backend(mock, clock=lambda: now[0], poll_timeout_s=5)
    backend.session._sleep = lambda s: now.__setitem__(0, now[0] + s)
    with pytest.raises(BackendUnavailable, match="still running after 5 s; .* a rerun resumes polling") as info:
        backend.edit(make_request(), journal=journal)
    assert [JobRef.from_record(r).job_id for r in journal.load()] == ["urn:ff:jobs:x:1"]
    assert info.value.spent_usd == backend.estimate(make_request()).usd  # submitted: billed, settled as such


def test_expired_result_url_is_fetched_again_from_a_fresh_status():
    expired = httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    mock = FireflyMock(download=[expired])
    make_backend(mock).edit(make_request())
    assert len(mock.of("status")) == 2 and len(mock.of("download")) == 2
    mock = FireflyMock(download=[expired, expired])
    with pytest.raises(BackendUnavailable, match="expired before they could be downloaded"):
        make_backend(mock).edit(make_request())


def test_a_succeeded_job_whose_result_is_lost_was_billed_and_says_so():
    """Firefly bills a succeeded job: a result that expires twice or does not decode is still settled at its cost."""
    expired = httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    junk = httpx.Response(200, content=b"not an image", headers={"content-type": "image/jpeg"})
    for downloads, message in (([expired, expired], "expired before"), ([junk], "does not decode")):
        backend = make_backend(FireflyMock(download=downloads))
        with pytest.raises(BackendUnavailable, match=message) as info:
            backend.edit(make_request())
        assert info.value.spent_usd == backend.estimate(make_request()).usd


def test_resume_from_a_saved_ref_submits_and_uploads_nothing():
    ref = JobRef(
        part=0,
        mode="fill",
        job_id="urn:ff:jobs:x:1",
        status_url=f"{BASE}/v3/status/urn:ff:jobs:x:1",
        variations=1,
        submitted_at=time.time(),
    )
    mock = FireflyMock()
    result = make_backend(mock).edit(make_request(), journal=MemoryJournal([ref.to_record()]))
    assert [k for k, _ in mock.requests] == ["token", "status", "download"]
    assert result.extras["jobs"][0]["resumed"] is True


# ---- configuration and money ---------------------------------------------------------------------


def test_estimate_and_cost_say_whose_price_it_is():
    placeholder = make_backend(FireflyMock())
    est = placeholder.estimate(make_request(n=3))
    assert est.usd == Decimal("0.30") and "PLACEHOLDER" in est.basis
    contract = make_backend(FireflyMock(), price_per_operation_usd=Decimal("0.045"))
    assert contract.estimate(make_request(n=3)).usd == Decimal("0.135")
    result = contract.edit(make_request())
    assert result.cost_usd == Decimal("0.045") and result.extras["cost_basis"].startswith("contract rate")


def test_firefly_limits_refused_before_any_request():
    mock = FireflyMock()
    with pytest.raises(InvalidRequest, match="limit: 1024 for Firefly fill"):
        make_backend(mock).edit(make_request(prompt="x" * 1025))
    with pytest.raises(InvalidRequest, match="expand .* needs the size"):
        make_backend(mock, maskless="expand").edit(make_request(mask=False))
    with pytest.raises(InvalidRequest, match="a mask is required"):
        make_backend(mock, maskless="refuse").edit(make_request(mask=False))
    assert mock.requests == []


def test_credentials_from_files_and_missing_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("FIREFLY_SERVICES_CLIENT_SECRET")
    mock = FireflyMock()
    with pytest.raises(BackendMisconfigured, match="FIREFLY_SERVICES_CLIENT_SECRET"):
        make_backend(mock).edit(make_request())
    (tmp_path / "secret").write_text(SECRET + "\n")
    make_backend(mock, client_secret_file=tmp_path / "secret").edit(make_request())
    assert f"client_secret={SECRET}" in mock.of("token")[0].content.decode()


def test_repr_and_capabilities():
    backend = make_backend(FireflyMock())
    assert SECRET not in repr(backend) and CID not in repr(backend) and "tok-" not in repr(backend.tokens)
    caps = backend.capabilities
    assert (caps.training_data, caps.mask_mode, caps.max_images, caps.transparent_background) == (
        "commercially_cleared",
        "native",
        1,
        False,
    )
    assert not make_backend(FireflyMock(), maskless="refuse").capabilities.mask_optional
    assert FireflyEditBackend.resumable and "journal" in FireflyEditBackend.edit.__code__.co_varnames
