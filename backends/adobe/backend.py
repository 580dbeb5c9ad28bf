"""`FireflyEditBackend`: Adobe Firefly Services' async image APIs, over httpx. Training data: commercially cleared.

One edit = IMS token (cached) -> upload to Firefly storage -> submit an async job -> poll -> download the
pre-signed results (valid one hour) -> back to the request's size and format. Which job:
  mask       `fill-async`. OpenAI's mask (alpha 0 = edit) becomes Firefly's (white = edit). Input and mask are
             letterboxed into the nearest of Firefly's fill sizes; the answer is cropped and resized back, and
             composited onto the original outside the mask (`paste_back: true`), so pixels there stay exact
             even though Firefly may answer in JPEG.
  no mask    `maskless: instruct` (default): the Image 5 instruct edit (`/v4/images/generate-async`, one
             reference image, one image per job). `maskless: expand`: `expand-async` to the requested size
             (outpainting: the job must name an explicit size). `maskless: refuse`: a mask is required.
  n          fill/expand: up to 4 variations per job, several jobs past 4; instruct: n jobs.
Crash safety: `edit(request, journal=...)` saves each submitted job's id and status URL (`JobRef`) to the
journal BEFORE polling, and polls the refs it finds there instead of submitting again (`backends.adobe.journal`
explains the contract a runner implements). Cost: operations (images) x the contract rate
(`backends.adobe.prices`). Client id and secret come from the environment or files; never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from backends import hosted_canvas, hosted_http
from backends.adobe import wire
from backends.adobe.auth import DEFAULT_SCOPE, DEFAULT_TOKEN_URL, Credentials, ImsTokens
from backends.adobe.job_plan import JobPlan, split_parts
from backends.adobe.journal import JobJournal, JobRef, MemoryJournal
from backends.adobe.prices import firefly_prices, operation_rate
from backends.adobe.session import FireflySession, ResultExpired
from backends.base import Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.credentials import read_secret, source
from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, InvalidRequest
from backends.pricing import PriceTable, load_prices
from backends.registry import parse_settings
from backends.validation import check_request

log = logging.getLogger(__name__)

PRICE_KEYS = {"fill": "fill", "expand": "expand", "instruct": "instruct_edit"}
MODELS = {"fill": "firefly-fill", "expand": "firefly-expand", "instruct": "firefly-image5"}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://firefly-api.adobe.io"
    token_url: str = DEFAULT_TOKEN_URL
    scope: str = DEFAULT_SCOPE
    client_id_env: str = "FIREFLY_SERVICES_CLIENT_ID"
    client_secret_env: str = "FIREFLY_SERVICES_CLIENT_SECRET"
    client_id_file: Path | None = None  # win over the environment when set
    client_secret_file: Path | None = None
    maskless: Literal["instruct", "expand", "refuse"] = "instruct"  # what a request without a mask becomes
    price_per_operation_usd: Decimal | None = Field(default=None, gt=0)  # your contract's rate
    paste_back: bool = True  # keep pixels outside the mask exactly (Firefly may answer in JPEG)
    feather_px: int = Field(default=4, ge=0, le=64)
    locale: str | None = None  # e.g. "en-US": promptBiasingLocaleCode / localeCode
    poll_interval_s: float = Field(default=1.0, gt=0)
    max_poll_interval_s: float = Field(default=10.0, gt=0)
    poll_timeout_s: float = Field(default=600.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    concurrency: int = Field(default=1, ge=1)  # jobs in flight, used by the runner
    # Firefly API requests per minute: uploads, submits and status polls (not IMS tokens or result downloads,
    # which go to other hosts), shared by every backend on this client id. Adobe's default: 4 per minute per org
    requests_per_minute: float | None = Field(default=4, gt=0)


class FireflyEditBackend:
    Settings = Settings
    resumable = True  # for the runner: `edit()` takes `journal=` (`backends.journal`) and resumes the jobs it names
    paces_requests = True  # for the runner: `requests_per_minute` is paced here, per HTTP request, not per job

    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        client: httpx.Client | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = s = settings or Settings()
        try:
            self.prices = firefly_prices(prices or load_prices())
        except BackendMisconfigured as exc:
            raise exc.with_context(backend=name) from None
        self.rate, self.rate_basis = operation_rate(self.prices, s.price_per_operation_usd)
        if s.price_per_operation_usd is None:
            log.warning("%s: Firefly is billed at %s", name, self.rate_basis)
        self._client = hosted_http.LazyClient(client, timeout_s=s.timeout_s, connect_timeout_s=s.connect_timeout_s)
        self.tokens = ImsTokens(s.token_url, s.scope, clock=clock)
        self.session = FireflySession(
            name=name,
            base_url=s.base_url,
            http=self._client.get,
            tokens=self.tokens,
            max_retries=s.max_retries,
            poll_interval_s=s.poll_interval_s,
            max_poll_interval_s=s.max_poll_interval_s,
            poll_timeout_s=s.poll_timeout_s,
            sleep=sleep,
            clock=clock,
            pacer=hosted_http.shared_pacer(
                ("firefly", s.base_url, source(s.client_id_file, s.client_id_env)), s.requests_per_minute
            ),
        )
        self.capabilities = Capabilities(
            max_images=1,
            mask_optional=s.maskless != "refuse",
            arbitrary_sizes=True,
            reference_images=False,
            transparent_background=False,
            input_fidelity=False,
            max_image_bytes=wire.UPLOAD_LIMIT,
            mask_mode="native",
            n_mode="native",
            size_mode="resized",
            training_data="commercially_cleared",
        )

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> FireflyEditBackend:
        return cls(name, parse_settings(Settings, settings, backend=name, kind="firefly"))

    def __repr__(self) -> str:  # never the client id's secret, never a token
        return f"FireflyEditBackend(name={self.name!r}, base_url={self.settings.base_url!r})"

    @property
    def price_note(self) -> str | None:
        """What `plan` shows beside this backend: that its rate is prices.yaml's placeholder, not a contract's."""
        if self.settings.price_per_operation_usd is None and self.prices.operation_usd_is_placeholder:
            return f"PLACEHOLDER ${self.rate}/operation"
        return None

    def _mode(self, request: EditRequest) -> str:
        return "fill" if request.mask is not None else self.settings.maskless

    def estimate(self, request: EditRequest) -> CostEstimate:
        mode = self._mode(request)
        ops = request.n * self.prices.operations_per_image.get(PRICE_KEYS.get(mode, mode), 1)
        usd = ops * self.rate
        return CostEstimate(
            usd=usd,
            basis=f"{ops} Firefly operation(s) ({request.n} image(s), {mode}) x "
            f"${self.rate} = ${usd} ({self.rate_basis})",
        )

    # ---- edit -------------------------------------------------------------------------------------

    def edit(self, request: EditRequest, *, journal: JobJournal | None = None) -> EditResult:
        try:
            return self._edit(request, journal if journal is not None else MemoryJournal())
        except EditError as exc:
            raise exc.with_context(job_id=request.job_id, backend=self.name) from None

    def _edit(self, request: EditRequest, journal: JobJournal) -> EditResult:
        check_request(request, self.capabilities, backend=self.name)
        mode = self._mode(request)
        self._check(request, mode)
        creds = self._credentials()
        start = time.perf_counter()
        job = JobPlan.make(request, mode, self.settings.paste_back)
        parts = split_parts(mode, request.n, request.seed)
        refs_saved = map(JobRef.from_record, journal.load(JobRef.KIND))
        saved = {r.part: r for r in refs_saved if r.mode == mode and r.part < len(parts)}
        refs: list[JobRef] = []
        uploads: tuple[str, ...] | None = None
        for i, (variations, seeds) in enumerate(parts):
            if i in saved:
                log.info(
                    "%s: resuming Firefly job %s (part %d): polling, not submitting", self.name, saved[i].job_id, i
                )
                refs.append(saved[i])
                continue
            uploads = uploads or tuple(self.session.upload(data, mime, creds) for data, mime in job.uploads())
            job_id, status_url = self.session.submit(
                mode, job.body(uploads, request, variations, seeds, self.settings.locale), creds
            )
            ref = JobRef(
                part=i, mode=mode, job_id=job_id, status_url=status_url, variations=variations, submitted_at=time.time()
            )
            journal.save(ref.to_record())  # durable before the first poll: from here a crash resumes, never pays again
            refs.append(ref)
        images, jobs = [], []
        submitted_usd = sum(r.variations for r in refs) * self._ops_per_image(mode) * self.rate
        for ref in refs:
            try:
                state = self.session.poll(ref, creds)
            except EditError as exc:  # submitted, so billed, and still in the journal: a rerun polls it again
                exc.spent_usd = submitted_usd
                raise
            if state.status != "succeeded":
                journal.drop(ref.to_record())  # a failed job is spent: a rerun submits it afresh
                failure = wire.job_error(ref.job_id, state)
                others_usd = submitted_usd - ref.variations * self._ops_per_image(mode) * self.rate
                if others_usd:  # the request's other jobs were made, and billed, all the same
                    failure.spent_usd = others_usd
                raise failure
            try:
                for data in self._download(ref, state, creds):
                    images.append(
                        hosted_canvas.finish(
                            data,
                            job.finish_plan,
                            output_format=request.output_format,
                            compression=request.output_compression,
                            feather_px=self.settings.feather_px,
                            crop=job.crop,
                        )
                    )
            except EditError as exc:  # succeeded, so billed, even though its result is lost or unusable
                exc.spent_usd = submitted_usd
                raise
            jobs.append(
                {
                    "job_id": ref.job_id,
                    "part": ref.part,
                    "variations": ref.variations,
                    "resumed": ref.part in saved,
                    "seeds": [s for s, _ in state.outputs],
                    **state.extra,
                }
            )
        ops = len(images) * self._ops_per_image(mode)
        cost = ops * self.rate
        first_seed = jobs[0]["seeds"][0] if jobs and jobs[0]["seeds"] else None
        log.info("%s: %s done: %d image(s), %d job(s), $%s", self.name, mode, len(images), len(refs), cost)
        return EditResult(
            images=tuple(d.data for d in images),
            output_format=request.output_format,
            width=images[0].width,
            height=images[0].height,
            backend=self.name,
            model=MODELS[mode],
            usage=Usage(),
            cost_usd=cost,
            timings={"total_s": time.perf_counter() - start},
            seed=first_seed,
            quality="auto",
            extras={
                "mode": mode,
                "jobs": jobs,
                "operations": ops,
                "operation_usd": str(self.rate),
                "cost_basis": self.rate_basis,
                "mask_mode": "native" if mode == "fill" else "none",
                **job.notes,
                **images[0].notes,
            },
        )

    def _ops_per_image(self, mode: str) -> int:
        return self.prices.operations_per_image.get(PRICE_KEYS[mode], 1)

    def _download(self, ref: JobRef, state: wire.JobState, creds: Credentials) -> list[bytes]:
        """Each output's bytes; an expired URL is re-fetched once from a fresh status answer."""
        try:
            return [self.session.download(url) for _, url in state.outputs]
        except ResultExpired:
            log.warning("%s: results of job %s had expired; asking for fresh URLs", self.name, ref.job_id)
        fresh = self.session.poll(ref, creds)
        try:
            return [self.session.download(url) for _, url in fresh.outputs]
        except ResultExpired:
            raise BackendUnavailable(
                f"the results of Firefly job {ref.job_id} expired before they could be downloaded (the job was billed)"
            ) from None

    def _check(self, request: EditRequest, mode: str) -> None:
        """Firefly's own limits, before anything is uploaded or paid."""
        limit = wire.MAX_PROMPT[mode]
        if len(request.prompt) > limit:
            raise InvalidRequest(
                f"prompt: {len(request.prompt)} characters (limit: {limit} for Firefly {mode})",
                field="prompt",
                value=len(request.prompt),
                limit=f"{limit} characters",
            )
        first = request.images[0]
        if mode == "instruct" and not 1 / 5 <= first.width / first.height <= 5:
            raise InvalidRequest(
                f"image: {first.width}x{first.height} is outside Image 5's aspect ratios (limit: 1:5 to 5:1)",
                field="image",
                value=first.name,
                limit="1:5 to 5:1",
            )
        if mode == "expand" and request.size == "auto":
            raise InvalidRequest(
                "size='auto': an expand (outpaint) needs the size to expand to (limit: WxH up to "
                f"{wire.MAX_EXPAND_SIDE})",
                field="size",
                value="auto",
                limit="an explicit WxH",
            )

    def check_credentials(self) -> None:
        """`BackendMisconfigured` if the client id or secret cannot be read now (`editroute serve` checks at
        start); no call."""
        self._credentials()

    def _credentials(self) -> Credentials:
        s = self.settings
        cid = read_secret(s.client_id_file, s.client_id_env, what="Firefly client id", file_setting="client_id_file")
        secret = read_secret(
            s.client_secret_file, s.client_secret_env, what="Firefly client secret", file_setting="client_secret_file"
        )
        return Credentials(
            cid,
            secret,
            f"{source(s.client_id_file, s.client_id_env)}/{source(s.client_secret_file, s.client_secret_env)}",
        )

    def close(self) -> None:
        self._client.close()
