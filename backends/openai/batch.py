"""`kind: openai-batch`: OpenAI's Batch API for image edits, at its Batch prices (half the synchronous ones).

The same settings as `kind: openai` (model, base_url, key, gateway headers...) plus the lane's own: how many
requests and bytes go into one input file, how often to poll, and how local images travel (uploaded once through
the Files API and referenced by `file_id`, or inline as data URLs). Its estimate and its bill use the model's
Batch rates (prices.yaml `batch:`; `rates:` here are Batch rates); its capabilities are the model's, plus
`turnaround_s`, the completion window, so the router sends it only jobs whose deadline can wait that long.

This class knows HTTP and the wire (`batch_wire`): upload a file, create / retrieve / list / cancel a batch,
find one by its metadata, stream a file's content, turn a request into a JSONL line and an output line into an
`EditResult`. Collecting jobs into batches, the ledger, polling and crash recovery are the runner's
(`pipeline.run.batch_lane`): a batch lane has no single-job `edit()`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import IO, Any, Literal

import httpx
from pydantic import Field, model_validator

from backends import hosted_http
from backends.base import CostEstimate, EditRequest, EditResult
from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, OutcomeUnknown
from backends.images import InputImage
from backends.journal import CallJournal
from backends.openai import batch_wire, wire
from backends.openai.backend import OpenAIEditBackend
from backends.openai.backend import Settings as SyncSettings
from backends.openai.batch_wire import BatchInfo, LineResult
from backends.openai.response import cost_of_usage
from backends.pricing import ModelPrices, PriceTable
from backends.registry import parse_settings
from backends.validation import check_request

log = logging.getLogger(__name__)

# Which Files API purpose an uploaded input image gets. OpenAI's images-and-vision guide uploads image inputs
# referenced by `file_id` with purpose "vision" (https://developers.openai.com/api/docs/guides/images-vision);
# no source says which purpose a JSON image edit (or a batch line's) `file_id` needs: UNVERIFIED, a setting.
IMAGE_PURPOSES = ("vision", "user_data")


class Settings(SyncSettings):
    """`kind: openai` settings plus the lane's. `rates:` (USD per 1M tokens) are this lane's Batch rates."""

    completion_window: Literal["24h"] = "24h"  # the only window the API offers
    max_requests_per_batch: int = Field(default=batch_wire.MAX_REQUESTS, ge=1, le=batch_wire.MAX_REQUESTS)
    max_bytes_per_file: int = Field(default=batch_wire.MAX_FILE_BYTES, ge=1024, le=batch_wire.MAX_FILE_BYTES)
    poll_interval: float = Field(default=2.0, gt=0)  # seconds before the first status check, doubling ...
    poll_max_interval: float = Field(default=300.0, gt=0)  # ... up to this
    image_upload: Literal["files", "data_url"] = "files"  # see docs/batch-lane.md for the measured difference
    image_file_purpose: Literal["vision", "user_data"] = "vision"
    # A queue of jobs waiting for partners is sent after this many seconds without a new one (the runner also
    # sends it as soon as no more jobs can come: the manifest is read and every job is queued or done).
    collect_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _intervals(self) -> Settings:
        if self.poll_max_interval < self.poll_interval:
            raise ValueError("poll_max_interval must be at least poll_interval")
        return self


def batch_prices(entry: ModelPrices, model: str) -> ModelPrices:
    """The model's entry priced at its Batch rates. Output text has no Batch rate of its own: billed at the Batch
    image output rate, as the synchronous bill does for a model without one (never underbilled)."""
    rates = entry.batch
    if rates is None:
        raise BackendMisconfigured(
            f"OpenAI model {model!r} has no Batch rates in prices.yaml (`batch:`); give them as `rates:` in the "
            f"policy's openai-batch backend"
        )
    return entry.model_copy(
        update={
            "text_in": rates.text_in,
            "text_in_cached": rates.text_in_cached,
            "image_in": rates.image_in,
            "image_in_cached": rates.image_in_cached,
            "image_out": rates.image_out,
            "text_out": None,
            "verified": entry.verified and rates.verified,
            "batch": None,
        }
    )


class OpenAIBatchBackend(OpenAIEditBackend):
    Settings = Settings
    resumable = False  # never called job by job: the runner's batch lane drives it
    batch_lane = True  # the runner gives this backend a lane (pipeline.run.batch_lane) instead of calls

    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        client: httpx.Client | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings = settings or Settings()
        # the model's lifecycle checks and capabilities as for `kind: openai`; `rates:` given are Batch rates
        super().__init__(name, settings, client=client, prices=prices, sleep=sleep)
        self.settings: Settings = settings
        if settings.rates is None:
            try:
                self.prices = batch_prices(self.prices, settings.model)
            except BackendMisconfigured as exc:
                raise exc.with_context(backend=name) from None
        self.window_s = float(batch_wire.COMPLETION_WINDOWS[settings.completion_window])
        self.capabilities = replace(self.capabilities, turnaround_s=self.window_s)

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> OpenAIBatchBackend:
        return cls(name, parse_settings(Settings, settings, backend=name, kind="openai-batch"))

    def estimate(self, request: EditRequest) -> CostEstimate:
        est = super().estimate(request)
        window = self.settings.completion_window
        return replace(est, basis=f"Batch API rates, results within {window}: {est.basis}", seconds=self.window_s)

    def edit(self, request: EditRequest, *, journal: CallJournal | None = None) -> EditResult:
        raise BackendMisconfigured(
            "a batch lane has no single-call edit: it runs the jobs of `editroute run` (a manifest whose jobs "
            "have a deadline) in OpenAI batches",
            job_id=request.job_id,
            backend=self.name,
        )

    # ---- requests and answers as lines -------------------------------------------------------------------

    def check(self, request: EditRequest) -> None:
        """What the synchronous backend checks before a call, before the request joins a batch."""
        check_request(request, self.capabilities, backend=self.name)
        self._check_layers(request)

    def line_body(self, request: EditRequest, upload: Callable[[InputImage, str], str] | None = None) -> dict:
        """The JSON edit body of one line. `upload(image, field) -> file_id` (image_upload: files) puts each local
        image in the Files API once; without it local images travel inline as data URLs (refused above OpenAI's
        20,971,520-character limit, naming the field)."""
        if upload is not None:
            request = _by_reference(request, upload)
        else:
            self._check_json(request)
        return wire.json_body(request, self.settings.model, takes_input_fidelity=self.capabilities.input_fidelity)

    def request_line(
        self, custom_id: str, request: EditRequest, upload: Callable[[InputImage, str], str] | None
    ) -> bytes:
        """The request as one JSONL line of an input file (`line_body`, wrapped as the Batch API wants it)."""
        return batch_wire.request_line(custom_id, self.line_body(request, upload))

    def metadata(self, run_key: str, batch_key: str) -> dict[str, str]:
        """What a batch's `metadata` carries: the output folder's key and the batch's own (to find it by listing)."""
        return {batch_wire.RUN_KEY: run_key, batch_wire.BATCH_KEY: batch_key}

    custom_id_of = staticmethod(batch_wire.custom_id_of)
    parse_line = staticmethod(batch_wire.parse_line)

    @staticmethod
    def content_key(img: InputImage) -> str:
        """What identifies an image for upload reuse: the sha256 of its bytes."""
        return hashlib.sha256(img.read()).hexdigest()

    def result_from_line(self, request: EditRequest, raw: bytes | Mapping[str, Any], batch_id: str) -> EditResult:
        """The job's `EditResult` from its output line, billed from the line's `usage` at Batch rates (a line that
        is an error raises it: `batch_wire.line_error`)."""
        result = batch_wire.parse_line(raw)
        if not result.ok:
            raise batch_wire.line_error(result, key_source=self._key_source)
        out = self.result_from_body(request, result.body, 1, 0.0, time.perf_counter(), encoding="batch")
        extras = {**out.extras, "batch_id": batch_id, "custom_id": result.custom_id}
        return replace(out, extras=extras)

    def line_cost(self, raw: bytes) -> Decimal | None:
        """What an output line was billed: its usage at this lane's Batch rates (None: the line has no usage)."""
        return cost_of_usage(batch_wire.usage_of(raw), self.prices)

    def line_error(self, result: LineResult | Mapping[str, Any]) -> EditError:
        """A failed line's error (a `LineResult`, or its fields as kept in the ledger)."""
        if not isinstance(result, LineResult):
            result = LineResult(**result)
        return batch_wire.line_error(result, key_source=self._key_source)

    # ---- HTTP --------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def _request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One API call with the SDK's retry rule. `retry=False` (creating a batch: not idempotent) never resends a
        request that may have gone out: a lost answer is `OutcomeUnknown`, an error answer raised as it is, and the
        caller looks the batch up by its metadata before creating it again."""
        s = self.settings
        key = self._read_key()
        params = {**kwargs.pop("params", {}), **({"api-version": s.api_version} if s.api_version else {})}
        attempt = 0
        while True:
            try:
                response = self._http().request(
                    method, self._url(path), params=params or None, headers=self._headers(key), **kwargs
                )
            except httpx.InvalidURL as exc:
                raise BackendMisconfigured(f"bad base_url {s.base_url!r}: {exc}") from None
            except httpx.HTTPError as exc:
                resend = retry or hosted_http.never_sent(exc)
                if resend and attempt < s.max_retries and wire.is_retryable_transport_error(exc):
                    self._sleep(wire.backoff_delay(attempt))
                    attempt += 1
                    continue
                raise wire.map_transport_error(exc, timeout_s=s.timeout_s) from None
            if response.status_code < 400:
                return response
            body = _json(response)
            if retry and attempt < s.max_retries and wire.should_retry(response.status_code, response.headers, body):
                self._sleep(wire.backoff_delay(attempt, response.headers))
                attempt += 1
                continue
            raise wire.map_status_error(
                response.status_code, response.headers, body, key_source=self._key_source, secret=key
            )

    def upload(self, data: bytes | IO[bytes], filename: str, purpose: str, content_type: str) -> dict[str, Any]:
        """`POST /files` (multipart `file` + `purpose`, as the SDK sends it): the File object. `data` may be an open
        file (an input file of up to 200 MB is streamed from disk)."""
        if not isinstance(data, bytes):
            data.seek(0)
        response = self._request(
            "POST", "/files", files={"file": (filename, data, content_type)}, data={"purpose": purpose}
        )
        obj = _json(response)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise BackendUnavailable(f"POST /files answered without a file id: {str(obj)[:200]!r}")
        return obj

    def file_exists(self, file_id: str) -> bool:
        """`GET /files/{id}`: whether the provider still has this file (an upload recorded earlier may be gone)."""
        try:
            self._request("GET", f"/files/{file_id}")
        except BackendMisconfigured as exc:
            if "not found" in exc.message:
                return False
            raise
        return True

    def create(self, input_file_id: str, metadata: Mapping[str, str]) -> BatchInfo:
        """`POST /batches`. Not retried once sent: a lost answer is `OutcomeUnknown` (look it up: `find`)."""
        body = batch_wire.create_body(input_file_id, metadata, self.settings.completion_window)
        return batch_wire.parse_batch(_json(self._request("POST", "/batches", json=body, retry=False)))

    def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_wire.parse_batch(_json(self._request("GET", f"/batches/{batch_id}")))

    def cancel(self, batch_id: str) -> BatchInfo:
        return batch_wire.parse_batch(_json(self._request("POST", f"/batches/{batch_id}/cancel")))

    def batches(self, *, limit: int = 100) -> Iterator[BatchInfo]:
        """Every batch of the key's organisation, newest first (`GET /batches`, page after page)."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
            items, more = batch_wire.parse_page(_json(self._request("GET", "/batches", params=params)))
            yield from items
            if not more:
                return
            after = items[-1].id

    def find(self, metadata: Mapping[str, str], *, created_after: int) -> BatchInfo | None:
        """The batch whose metadata holds all of `metadata`, looking back to `created_after` (unix seconds; the list
        is newest first, so paging stops there). The list endpoint has no metadata filter: matched here."""
        for info in self.batches():
            if all(info.metadata.get(k) == v for k, v in metadata.items()):
                return info
            if info.created_at and info.created_at < created_after:
                return None
        return None

    def download(self, file_id: str, into: IO[bytes]) -> int:
        """Stream a file's content (`GET /files/{id}/content`) into `into`; its size. Retried from the start."""
        s = self.settings
        key = self._read_key()
        for attempt in range(s.max_retries + 1):
            into.seek(0)
            into.truncate()
            try:
                with self._http().stream(
                    "GET", self._url(f"/files/{file_id}/content"), headers=self._headers(key)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise wire.map_status_error(
                            response.status_code,
                            response.headers,
                            _json(response),
                            key_source=self._key_source,
                            secret=key,
                        )
                    size = 0
                    for chunk in response.iter_bytes(1 << 20):
                        into.write(chunk)
                        size += len(chunk)
                    return size
            except httpx.HTTPError as exc:
                if attempt >= s.max_retries or not wire.is_retryable_transport_error(exc):
                    err = wire.map_transport_error(exc, timeout_s=s.timeout_s)
                    raise (BackendUnavailable(err.message) if isinstance(err, OutcomeUnknown) else err) from None
                self._sleep(wire.backoff_delay(attempt))
        raise AssertionError("unreachable")


def _by_reference(request: EditRequest, upload: Callable[[InputImage, str], str]) -> EditRequest:
    """The request with every local image replaced by its uploaded file's id."""

    def ref(img: InputImage | None, field: str) -> InputImage | None:
        if img is None or img.is_remote:
            return img
        return InputImage.remote(file_id=upload(img, field), field=field)

    one = len(request.images) == 1
    images = tuple(ref(img, "image" if one else f"image[{i}]") for i, img in enumerate(request.images))
    return replace(request, images=images, mask=ref(request.mask, "mask"), markup=ref(request.markup, "markup"))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300] or None
