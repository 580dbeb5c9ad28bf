"""`OpenAIEditBackend`: OpenAI's image edit API (gpt-image-*) over an httpx client, or any compatible server.

What goes on the wire and how failures are classified lives in `backends.openai.wire` (pure functions);
the model's lifecycle, rates and capabilities in `backends.openai.models` (data from configs/prices.yaml).
Building the backend refuses a retired model, so every command that builds one (policy check, plan, run,
serve, edit) fails before any call. The API key is read at `edit()` time from a file or the environment, used
for that request's headers only, and never stored, logged or put in an error. An unset `base_url` is
$OPENAI_BASE_URL (as in OpenAI's SDK), else https://api.openai.com/v1.

Retries: one budget per edit, here, with the OpenAI SDK's rule (`max_retries`; 408/409/429/5xx and dropped
connections; the server's `retry-after(-ms)`), and `max_retry_wait_s` caps the seconds slept in all: a longer
wait is not slept through, the error is raised at once with the provider's answer attached
(`backends.errors.upstream_of`), so a caller that retries itself (the SDK behind `editroute serve`) waits once.
A request with `partial_images` is streamed (`stream=true`): each partial image goes to the job's preview channel
(`backends.live`) as it arrives; a stream is retried only before its first event.

Crash safety (`edit(request, journal=...)`, `backends.journal`): the raw body of the 200 is saved to the journal
the moment it has arrived, BEFORE it is decoded, so a run killed from then on is finished by the next one from
the saved body (`result_from_raw`, no I/O), and the answer is never paid for twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from backends import hosted_canvas, hosted_http, live
from backends.base import CostEstimate, EditRequest, EditResult, Usage
from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, InvalidRequest, OutcomeUnknown
from backends.journal import CallJournal, JournalRecord
from backends.openai import models, stream, wire
from backends.openai.estimate import estimate_cost
from backends.openai.models import PolicyRates
from backends.openai.response import (
    ParsedResponse,
    cost_from_usage,
    cost_of_usage,
    decode_images,
    read_bytes,
    read_response,
)
from backends.pricing import PriceTable, load_prices
from backends.registry import parse_settings
from backends.validation import check_request, skipped_checks

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# A policy's openai backend without `model:`, and `editroute edit`'s default: OpenAI's model "for workflows where
# speed matters most", at the same token prices as Sunburst (everyday edits; pick Sunburst for text and precision).
DEFAULT_MODEL = "gpt-image-2.6-flare"
BASE_URL_ENV = "OPENAI_BASE_URL"  # as the OpenAI SDK reads it; a policy's `base_url:` wins
RESPONSE_KIND = "openai.response"  # the journal record of a 200's raw body


def _default_base_url() -> str:
    return os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    base_url: str = Field(default_factory=_default_base_url)
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None  # wins over the environment when set
    auth_style: Literal["bearer", "api-key"] = "bearer"  # "api-key": Azure OpenAI's header
    api_version: str | None = None  # sent as ?api-version=... (Azure)
    organization: str | None = None
    project: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)  # for gateways; not for secrets
    timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    # Seconds one edit may sleep between its retries, in all (None: no cap beyond 120 s per wait, as the SDK).
    max_retry_wait_s: float | None = Field(default=None, ge=0)
    concurrency: int = Field(default=4, ge=1)  # used by the runner
    requests_per_minute: float | None = Field(default=None, gt=0)  # used by the runner
    # USD per 1M tokens for a model prices.yaml does not list yet (or a contract's own rates): usage-priced.
    rates: PolicyRates | None = None
    # Opt into capabilities no source settles for this model (prices.yaml `unverified:`; docs/openai.md).
    unverified_features: tuple[str, ...] = ()


class OpenAIEditBackend:
    Settings = Settings
    resumable = True  # for the runner: `edit()` takes `journal=` and keeps the raw answer there before decoding

    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        client: httpx.Client | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.settings = settings or Settings()
        self._table = prices or load_prices()
        model = self.settings.model
        try:
            self.prices = models.resolve(model, self._table, rates=self.settings.rates)
            self.capabilities = models.capabilities(self.prices, model, self.settings.unverified_features)
        except BackendMisconfigured as exc:
            raise exc.with_context(backend=name) from None
        # one client, built on first use and shared by the runner's threads (an injected one is left to its owner)
        s = self.settings
        self._client = hosted_http.LazyClient(client, timeout_s=s.timeout_s, connect_timeout_s=s.connect_timeout_s)
        self._sleep = sleep

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> OpenAIEditBackend:
        return cls(name, parse_settings(Settings, settings, backend=name, kind="openai"))

    def __repr__(self) -> str:  # settings hold only where the key lives, never the key
        s = self.settings
        return f"{type(self).__name__}(name={self.name!r}, model={s.model!r}, base_url={s.base_url!r})"

    # ---- estimate ---------------------------------------------------------------------------------

    def estimate(self, request: EditRequest) -> CostEstimate:
        return estimate_cost(request, self.prices, self._table, model=self.settings.model)

    # ---- edit -------------------------------------------------------------------------------------

    def edit(self, request: EditRequest, *, journal: CallJournal | None = None) -> EditResult:
        try:
            return self._edit(request, journal)
        except EditError as exc:
            raise exc.with_context(job_id=request.job_id, backend=self.name) from None

    def _edit(self, request: EditRequest, journal: CallJournal | None = None) -> EditResult:
        check_request(request, self.capabilities, backend=self.name)
        self._check_layers(request)
        for note in skipped_checks(request):
            log.info("%s: %s", self.name, note)
        if journal is not None and (saved := journal.load(RESPONSE_KIND)):  # paid for before a crash: no call
            log.info("%s: job %s finished from the answer saved before a crash", self.name, request.job_id)
            return self._from_journal(request, journal, saved[-1])
        key = self._read_key()
        s = self.settings
        encoding = wire.encoding_for(request)
        takes = self.capabilities.input_fidelity
        if encoding == "json":
            self._check_json(request)
            send: dict[str, Any] = {"json": wire.json_body(request, s.model, takes_input_fidelity=takes)}
        else:
            send = {
                "data": wire.form_fields(request, s.model, takes_input_fidelity=takes),
                "files": wire.file_parts(request),
            }
        start = time.perf_counter()
        raw, attempts, unanswered = self._post(send, key, request)
        http_s = time.perf_counter() - start
        if journal is None:
            result = self.result_from_raw(request, raw, attempts, http_s, start)
            return _with_possible_charges(result, unanswered)
        record = JournalRecord(RESPONSE_KIND, data={"attempts": attempts, "http_s": http_s}, body=raw)
        journal.save(record)  # durable before decoding: from here on a crash never costs a second call
        return _with_possible_charges(self._from_journal(request, journal, record, start), unanswered)

    def _from_journal(
        self, request: EditRequest, journal: CallJournal, record: JournalRecord, start: float | None = None
    ) -> EditResult:
        d = record.data
        try:
            return self.result_from_raw(
                request,
                record.body or b"",
                int(d.get("attempts", 1)),
                float(d.get("http_s", 0.0)),
                start if start is not None else time.perf_counter(),
                resumed=start is None,
            )
        except EditError:
            journal.drop(record)  # an answer that cannot be decoded is not resumed again
            raise

    def result_from_raw(
        self, request: EditRequest, raw: bytes, attempts: int, http_s: float, start: float, *, resumed: bool = False
    ) -> EditResult:
        """The `EditResult` of a 200's raw body (just received, or saved in the journal; `resumed`: nothing was
        sent now): no I/O. A 200 that cannot be decoded was billed all the same: the error says what it cost. A
        server listening on the job's channel (`backends.live`) gets the provider's base64 before it is decoded."""
        try:
            parsed = read_bytes(raw)
        except EditError as exc:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            exc.spent_usd = self._billed_anyway(body, request)
            raise
        return self._result(request, parsed, attempts, http_s, start, resumed=resumed)

    def result_from_body(
        self, request: EditRequest, body: Any, attempts: int, http_s: float, start: float, *, encoding: str
    ) -> EditResult:
        """`result_from_raw` for an answer already parsed from JSON (a Batch API output line carries it)."""
        try:
            parsed = read_response(body)
        except EditError as exc:
            exc.spent_usd = self._billed_anyway(body, request)
            raise
        return self._result(request, parsed, attempts, http_s, start, encoding=encoding)

    def _result(
        self,
        request: EditRequest,
        parsed: ParsedResponse,
        attempts: int,
        http_s: float,
        start: float,
        *,
        resumed: bool = False,
        encoding: str | None = None,
    ) -> EditResult:
        s = self.settings
        encoding = encoding or wire.encoding_for(request)
        if parsed.usage is not None:
            cost = cost_from_usage(parsed, self.prices)
            cost_basis = "usage"
        else:  # some gateways drop `usage`: bill the estimate, and say so
            cost = self.estimate(request).usd
            cost_basis = "estimate (response had no usage)"
            log.warning("%s: response had no usage; cost %s is estimated", self.name, cost)
        fmt = parsed.detected_format or parsed.output_format or request.output_format
        if fmt != request.output_format:
            log.warning("%s: asked for %s, the server returned %s", self.name, request.output_format, fmt)
        log.info(
            "%s: edit done (%s): %d image(s) %dx%d, $%s, %d attempt(s), %.2fs",
            self.name,
            encoding,
            len(parsed.images_b64),
            parsed.width,
            parsed.height,
            cost,
            attempts,
            http_s,
        )
        result = EditResult(
            images=(),
            output_format=fmt,
            width=parsed.width,
            height=parsed.height,
            backend=self.name,
            model=s.model,
            usage=parsed.usage or Usage(),
            cost_usd=cost,
            timings={"total_s": time.perf_counter() - start, "http_s": http_s},
            quality=parsed.quality or request.quality,
            background=parsed.background or "opaque",
            extras={
                "attempts": attempts,
                "cost_basis": cost_basis,
                "encoding": encoding,
                **({"resumed": True} if resumed else {}),
                **({"openai_usage": dict(parsed.raw_usage)} if parsed.raw_usage is not None else {}),
                **({"partial_images": request.partial_images} if request.partial_images is not None else {}),
            },
        )
        answered = (parsed.width, parsed.height)  # the first image's, read from its header
        refit = hosted_canvas.may_refit(request, fmt) and answered != request.images[0].size
        channel = live.channel_for(request.job_id)
        if channel is not None and not refit:  # the caller may answer with the provider's base64 now, undecoded
            channel.final(live.FinalAnswer(parsed.images_b64, result))
        try:
            images = decode_images(parsed).images
            # THE SIZE RULE (backends.canvas): `auto` is the input's own size; the API made (and billed) its bucket
            fitted = hosted_canvas.to_input_size(
                request, images, output_format=fmt, compression=request.output_compression
            )
        except EditError as exc:  # an image that breaks in decoding or refitting was billed all the same
            exc.spent_usd = cost
            raise
        if fitted is None:
            return replace(result, images=images)
        images, (width, height), size_notes = fitted
        return replace(result, images=images, width=width, height=height, extras={**result.extras, **size_notes})

    @staticmethod
    def _check_layers(request: EditRequest) -> None:
        """A markup layer must hold transparent pixels (the annotations sit on them); it is decoded here, once."""
        markup = request.markup
        if markup is not None and not markup.has_transparent_pixels():
            raise InvalidRequest(
                f"markup={markup.name!r}: no transparent pixels (limit: a transparent PNG holding only the "
                f"annotations)",
                field="markup",
                value=markup.name,
                limit="a transparent PNG holding only the annotations",
            )

    @staticmethod
    def _check_json(request: EditRequest) -> None:
        """Local files in a JSON body travel as data URLs, which have a length limit."""
        for field, img in request.inputs:
            chars = wire.data_url_chars(img)
            if chars > wire.MAX_IMAGE_URL_CHARS:
                raise InvalidRequest(
                    f"{field}={img.name!r}: as a data URL it would be {chars:,} characters (limit: "
                    f"{wire.MAX_IMAGE_URL_CHARS:,}); upload it and give its file_id, or give an https URL",
                    field=field,
                    value=img.name,
                    limit=f"{wire.MAX_IMAGE_URL_CHARS} characters as a data URL",
                )

    def list_models(self) -> list[dict[str, Any]]:
        """`GET /models` with this backend's key and base_url: [{id, shutdown_date, ...}] (for `doctor`)."""
        key = self._read_key()
        s = self.settings
        params = {"api-version": s.api_version} if s.api_version else None
        try:
            response = self._http().get(s.base_url.rstrip("/") + "/models", params=params, headers=self._headers(key))
        except httpx.HTTPError as exc:
            raise wire.map_transport_error(exc, timeout_s=s.timeout_s) from None
        body = _json(response, strict=False)
        if response.status_code != 200:
            raise wire.map_status_error(
                response.status_code, response.headers, body, key_source=self._key_source, secret=key
            )
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendUnavailable("GET /models answered without a `data` list")
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def check_credentials(self) -> None:
        """`BackendMisconfigured` if the API key cannot be read now (`editroute serve` checks at start); no call."""
        self._read_key()

    def _read_key(self) -> str:
        s = self.settings
        if s.api_key_file is not None:
            try:
                key = Path(s.api_key_file).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise BackendMisconfigured(f"cannot read api_key_file {s.api_key_file}: {exc.strerror}") from None
            if not key:
                raise BackendMisconfigured(f"api_key_file {s.api_key_file} is empty")
            return key
        key = os.environ.get(s.api_key_env, "").strip()
        if not key:
            raise BackendMisconfigured(
                f"no API key: set the environment variable {s.api_key_env} or name a key "
                f"file (api_key_file: in the policy's backend, --api-key-file on editroute "
                f"edit)"
            )
        return key

    @property
    def _key_source(self) -> str:
        s = self.settings
        return f"api_key_file {s.api_key_file}" if s.api_key_file else f"${s.api_key_env}"

    def _http(self) -> httpx.Client:
        return self._client.get()

    def _headers(self, key: str) -> dict[str, str]:
        s = self.settings
        headers = {**s.extra_headers, "Accept": "application/json"}
        if s.auth_style == "api-key":
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        if s.organization:
            headers["OpenAI-Organization"] = s.organization
        if s.project:
            headers["OpenAI-Project"] = s.project
        return headers

    def _post(self, send: dict[str, Any], key: str, request: EditRequest) -> tuple[bytes, int, int]:
        """POST (`send`: httpx's data+files for multipart, or json) with the SDK's retry rule under one budget;
        returns the 200's raw body (a streamed edit's completed event, as an ImagesResponse), how many attempts it
        took, and how many of them went out and got no answer (retried all the same: each may have been billed)."""
        s = self.settings
        url = s.base_url.rstrip("/") + "/images/edits"
        params = {"api-version": s.api_version} if s.api_version else None
        attempt, waited, unanswered = 0, 0.0, 0

        def may_retry(delay: float) -> bool:
            return attempt < s.max_retries and (s.max_retry_wait_s is None or waited + delay <= s.max_retry_wait_s)

        while True:
            headers = {**self._headers(key), "x-stainless-retry-count": str(attempt)}
            try:
                if request.partial_images is not None:
                    return self._stream(url, send, params, headers, key, request), attempt + 1, unanswered
                response = self._http().post(url, **send, params=params, headers=headers)
            except httpx.InvalidURL as exc:
                raise BackendMisconfigured(f"bad base_url {s.base_url!r}: {exc}") from None
            except httpx.HTTPError as exc:
                delay = wire.backoff_delay(attempt)
                if wire.is_retryable_transport_error(exc) and may_retry(delay):
                    unanswered += hosted_http.answer_lost(exc)
                    self._wait(delay, f"{exc.__class__.__name__}", attempt)
                    attempt, waited = attempt + 1, waited + delay
                    continue
                err = wire.map_transport_error(exc, timeout_s=s.timeout_s)
                err.possible_charges = unanswered
                raise err from None
            except _Refused as refused:  # a streamed request answered with an error status
                response = refused.response
            if response.status_code == 200:
                return response.content, attempt + 1, unanswered
            body = _json(response, strict=False)
            delay = wire.backoff_delay(attempt, response.headers)
            if wire.should_retry(response.status_code, response.headers, body) and may_retry(delay):
                self._wait(delay, f"HTTP {response.status_code}", attempt)
                attempt, waited = attempt + 1, waited + delay
                continue
            err = wire.map_status_error(
                response.status_code, response.headers, body, key_source=self._key_source, secret=key
            )
            err.possible_charges = unanswered
            raise err

    def _wait(self, delay: float, why: str, attempt: int) -> None:
        log.warning("%s: %s; retry %d/%d in %.2fs", self.name, why, attempt + 1, self.settings.max_retries, delay)
        self._sleep(delay)

    def _stream(
        self, url: str, send: dict[str, Any], params: Any, headers: dict[str, str], key: str, request: EditRequest
    ) -> bytes:
        """One streamed call: partial images to the job's preview channel as they arrive; returns the completed
        event as an ImagesResponse body (what the journal keeps). An error status before the stream is raised as
        `_Refused` (the retry rule applies); once an event has arrived nothing is retried. If the listener goes
        away the call is abandoned: the provider may still bill it (`OutcomeUnknown`: a possible charge)."""
        channel = live.channel_for(request.job_id)
        decoder = stream.SSEDecoder()
        result: dict[str, Any] | None = None
        partials = 0
        with self._http().stream(
            "POST", url, **send, params=params, headers={**headers, "Accept": "text/event-stream"}
        ) as response:
            if response.status_code != 200:
                response.read()
                raise _Refused(response)
            if channel is not None:
                channel.on_cancel(response.close)  # unblocks a read waiting for the next event
            try:
                for chunk in response.iter_bytes():
                    for event in decoder.feed(chunk):
                        kind, payload = stream.read_event(event, key_source=self._key_source, secret=key)
                        if kind == "partial":  # passed on as the provider's base64
                            partials += 1
                            if channel is not None:
                                channel.send(payload)
                        elif kind == "completed":
                            result = payload
                    if channel is not None and channel.cancelled:
                        break
            except Exception as exc:
                if channel is not None and channel.cancelled:
                    pass  # we closed it (from the listener's thread; any read error then): said below
                elif partials and isinstance(exc, httpx.HTTPError):  # it had begun: not retried, may be billed
                    raise _possible_charge(
                        f"the event stream broke after {partials} partial image(s) ({exc.__class__.__name__})"
                    ) from None
                else:
                    raise
        if channel is not None and channel.cancelled and result is None:
            raise _possible_charge(f"stopped: the client went away after {partials} partial image(s)")
        return json.dumps(stream.completed_or_raise(result, partials)).encode()

    def _billed_anyway(self, body: Any, request: EditRequest) -> Decimal:
        """What a 200 that cannot be used (`body`: its JSON, None if it is not JSON) was billed: its `usage` when
        that can be read, else the estimate."""
        usage = body.get("usage") if isinstance(body, Mapping) else None
        try:
            cost = cost_of_usage(usage, self.prices)
        except ValueError:  # token counts that are not numbers
            cost = None
        return cost if cost is not None else self.estimate(request).usd

    def close(self) -> None:
        self._client.close()


class _Refused(Exception):
    """A streamed request answered with an error status (handled like a plain one)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _json(response: httpx.Response, *, strict: bool = True) -> Any:
    try:
        return response.json()
    except ValueError:
        if strict:
            raise BackendUnavailable(
                f"HTTP {response.status_code} with a body that is not JSON "
                f"({response.headers.get('content-type', 'no content-type')})"
            ) from None
        return response.text[:300]


def _possible_charge(what: str) -> OutcomeUnknown:
    """A call abandoned after it went out: the provider may bill it, so the runner holds its budget as a
    possible charge (never free) until it is resolved."""
    return OutcomeUnknown(f"{what}; the provider may bill the edit")


def _with_possible_charges(result: EditResult, unanswered: int) -> EditResult:
    """Tries that went out unanswered before the one that succeeded: the runner holds each as a possible charge."""
    return replace(result, extras={**result.extras, "possible_charges": unanswered}) if unanswered else result
