"""`GeminiEditBackend`: Google's Gemini image models ("Nano Banana") through `generateContent`, over httpx.

OpenAI edit semantics, mapped honestly (each one is in `capabilities`, and in every result's extras):
  mask    Gemini takes none. The model edits the whole picture; its output is composited onto the original
          outside the mask (`backends.hosted_canvas`): pixels outside the mask are the input's, exactly.
  n       one image per call: n parallel calls, each billed from its own `usageMetadata` and listed in
          `extras["calls"]`; `cost_usd` is their exact sum.
  size    the model's nearest `aspectRatio` at 1K; its answer is cover-fitted (scaled, centre-cropped) to the
          requested size, and `extras["resized"]` says so. `auto` is the first input's own size (THE SIZE RULE,
          `backends.canvas`), with or without a mask.
  quality Gemini has one tier per model: quality is not sent, and the result says `quality: "auto"`.
Model ids, rates and lifecycle are data (`configs/prices.yaml`, `gemini:`). The key is read at `edit()` time
from a file or the environment, sent as `x-goog-api-key`, and never stored, logged or put in an error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from backends import hosted_canvas, hosted_http
from backends.base import Capabilities, CostEstimate, EditRequest, EditResult, Usage
from backends.credentials import read_secret
from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, InvalidRequest
from backends.google import models, wire
from backends.pricing import PriceTable, load_prices
from backends.registry import parse_settings
from backends.validation import check_request

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"  # as google-genai reads it; a policy's `base_url:` wins
DEFAULT_MODEL = "gemini-3.1-flash-lite-image"
MAX_INLINE_BYTES = 20 * 1024 * 1024  # inline request limit in Google's guide; larger inputs need the Files API


def _default_base_url() -> str:
    return os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    base_url: str = Field(default_factory=_default_base_url)
    api_version: str = "v1"  # google-genai 3.x's default (2.x used v1beta; both are served)
    api_key_env: str = "GEMINI_API_KEY"
    api_key_file: Path | None = None  # wins over the environment when set
    image_config_field: Literal["imageConfig", "responseFormat.image"] = "imageConfig"
    response_modalities: tuple[Literal["IMAGE", "TEXT"], ...] = ("IMAGE",)
    feather_px: int = Field(default=4, ge=0, le=64)  # soft edge inside the mask when compositing
    extra_headers: dict[str, str] = Field(default_factory=dict)  # for gateways; not for secrets
    timeout_s: float = Field(default=180.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_parallel_calls: int = Field(default=4, ge=1, le=16)  # calls in flight for one job's n images
    concurrency: int = Field(default=4, ge=1)  # jobs in flight, used by the runner
    # generateContent requests per minute (each of a job's n calls and each retry is one), shared by every backend
    # on this key and model (Google's limits are per project and model); None: no pacing
    requests_per_minute: float | None = Field(default=None, gt=0)


class GeminiEditBackend:
    Settings = Settings
    paces_requests = True  # for the runner: `requests_per_minute` is paced here, per HTTP request, not per job

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
        try:
            self.model = models.resolve(self.settings.model, prices or load_prices())
        except BackendMisconfigured as exc:
            raise exc.with_context(backend=name) from None
        self._client = hosted_http.LazyClient(
            client, timeout_s=self.settings.timeout_s, connect_timeout_s=self.settings.connect_timeout_s
        )
        self._sleep = sleep
        s = self.settings
        self._pacer = hosted_http.shared_pacer(("gemini", s.base_url, self._key_source, s.model), s.requests_per_minute)
        self.capabilities = Capabilities(
            max_images=self.model.max_images,
            transparent_background=False,
            input_fidelity=False,
            mask_mode="paste_back",
            n_mode="parallel_calls",
            size_mode="resized",
            training_data="undisclosed",
        )

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any]) -> GeminiEditBackend:
        return cls(name, parse_settings(Settings, settings, backend=name, kind="gemini"))

    def __repr__(self) -> str:  # settings hold only where the key lives, never the key
        s = self.settings
        return f"GeminiEditBackend(name={self.name!r}, model={s.model!r}, base_url={s.base_url!r})"

    def estimate(self, request: EditRequest) -> CostEstimate:
        m = self.model
        one = models.estimate_tokens(m, request.prompt, len(request.images))
        usd = models.cost(m, one) * request.n
        basis = (
            f"{request.n} call(s) x ({one.image_out} output image tokens x ${m.image_out}/1M"
            f" + {one.image_in} input image tokens ({len(request.images)} image(s)) x ${m.image_in}/1M"
            f" + ~{one.text_in} text tokens x ${m.text_in}/1M) = ${usd:.4f} ({self.settings.model};"
            f" thinking tokens, if any, billed from usage)"
        )
        return CostEstimate(usd=usd, basis=basis)

    # ---- edit -------------------------------------------------------------------------------------

    def edit(self, request: EditRequest) -> EditResult:
        try:
            return self._edit(request)
        except EditError as exc:
            raise exc.with_context(job_id=request.job_id, backend=self.name) from None

    def _edit(self, request: EditRequest) -> EditResult:
        check_request(request, self.capabilities, backend=self.name)
        inline = sum(len(img.read()) for img in request.images) * 4 // 3
        if inline > MAX_INLINE_BYTES:
            raise InvalidRequest(
                f"image: {inline} bytes of inline images (base64) exceed Gemini's request limit",
                field="image",
                value=inline,
                limit=f"{MAX_INLINE_BYTES} bytes in one request",
            )
        key = self._read_key()
        plan = hosted_canvas.prepare(request)
        target = plan.out_size
        ratio = wire.choose_aspect_ratio(*target, self.model.aspect_ratios) if target else None
        body = wire.build_body(
            request.prompt,
            [(img.mime, img.read()) for img in request.images],
            aspect_ratio=ratio,
            image_size=self.model.image_size,
            image_config_field=self.settings.image_config_field,
            modalities=self.settings.response_modalities,
        )
        start = time.perf_counter()
        answers = self._calls(body, key, request.n)
        http_s = time.perf_counter() - start
        images: list[hosted_canvas.Finish] = []
        calls: list[dict[str, Any]] = []
        usage = Usage()
        for answer, attempts in answers:
            try:
                done = hosted_canvas.finish(
                    answer.image,
                    plan,
                    output_format=request.output_format,
                    compression=request.output_compression,
                    feather_px=self.settings.feather_px,
                )
            except EditError as exc:  # every call answered 200 and is billed, even if its image is unusable
                exc.spent_usd = sum((models.cost(self.model, a.tokens) for a, _ in answers), Decimal(0))
                raise
            images.append(done)
            usage = _add(usage, answer.usage)
            calls.append(
                {
                    "cost_usd": str(models.cost(self.model, answer.tokens)),
                    "attempts": attempts,
                    "usage": answer.usage.to_dict(),
                    "finish_reason": answer.finish_reason,
                    "response_id": answer.response_id,
                    "model_version": answer.model_version,
                    **({"text": answer.text[:500]} if answer.text else {}),
                }
            )
        cost = sum((Decimal(c["cost_usd"]) for c in calls), Decimal(0))
        log.info("%s: edit done: %d call(s), %s, $%s, %.2fs", self.name, len(calls), images[0].notes, cost, http_s)
        return EditResult(
            images=tuple(d.data for d in images),
            output_format=request.output_format,
            width=images[0].width,
            height=images[0].height,
            backend=self.name,
            model=self.settings.model,
            usage=usage,
            cost_usd=cost,
            timings={"total_s": time.perf_counter() - start, "http_s": http_s},
            quality="auto",
            extras={
                "cost_basis": "usage",
                "calls": calls,
                "aspect_ratio": ratio,
                "n_mode": "parallel_calls",
                "mask_mode": "paste_back" if request.mask is not None else "none",
                **images[0].notes,
            },
        )

    def _calls(self, body: dict[str, Any], key: str, n: int) -> list[tuple[wire.Answer, int]]:
        """n calls, at most `max_parallel_calls` at once. After the first failure no further call starts (no more
        spend); the error is raised, naming what the calls that had finished cost."""
        if n == 1:
            return [self._call(body, key)]
        stop = threading.Event()

        def one() -> tuple[wire.Answer, int]:
            if stop.is_set():
                raise _Skipped
            try:
                return self._call(body, key)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(min(n, self.settings.max_parallel_calls), thread_name_prefix="gemini") as pool:
            futures = [pool.submit(one) for _ in range(n)]
            wait(futures)
        errors = [f.exception() for f in futures if not isinstance(f.exception(), _Skipped | type(None))]
        if not errors:
            return [f.result() for f in futures]
        ok = [f.result()[0] for f in futures if f.exception() is None]
        exc = errors[0]
        assert exc is not None
        if ok and isinstance(exc, EditError):
            spent = sum((models.cost(self.model, a.tokens) for a in ok), Decimal(0))
            exc.message += f" ({len(ok)} of {n} calls had succeeded and were billed ${spent}; their images are lost)"
            exc.args = (exc.message,)
            exc.spent_usd = spent + (exc.spent_usd or 0)  # settled by the runner, not dropped at $0
            log.warning("%s: %d of %d calls billed $%s before one failed", self.name, len(ok), n, spent)
        raise exc

    def _call(self, body: dict[str, Any], key: str) -> tuple[wire.Answer, int]:
        """One generateContent with retries (408/429/5xx/dropped connections); the 200's answer and attempts."""
        s = self.settings
        url = f"{s.base_url.rstrip('/')}/{s.api_version}/models/{s.model}:generateContent"
        headers = {**s.extra_headers, "x-goog-api-key": key, "Content-Type": "application/json"}
        attempt = 0
        while True:
            if self._pacer is not None:
                self._pacer.acquire(self._sleep)
            try:
                response = self._client.get().post(url, json=body, headers=headers)
            except httpx.InvalidURL as exc:
                raise BackendMisconfigured(f"bad base_url {s.base_url!r}: {exc}") from None
            except httpx.HTTPError as exc:
                if attempt < s.max_retries and hosted_http.is_retryable_transport_error(exc):
                    self._wait(attempt, None, exc.__class__.__name__)
                    attempt += 1
                    continue
                raise hosted_http.map_transport_error(exc, timeout_s=s.timeout_s) from None
            payload = _json(response)
            if response.status_code == 200:
                return wire.parse_response(payload), attempt + 1
            if attempt < s.max_retries and wire.should_retry(response.status_code, response.headers, payload):
                self._wait(attempt, wire.retry_delay(payload, response.headers), f"HTTP {response.status_code}")
                attempt += 1
                continue
            raise wire.map_status_error(
                response.status_code, response.headers, payload, model=s.model, key_source=self._key_source, secret=key
            )

    def _wait(self, attempt: int, server_wait: float | None, why: str) -> None:
        delay = hosted_http.backoff_delay(attempt, server_wait)
        log.warning("%s: %s; retry %d/%d in %.2fs", self.name, why, attempt + 1, self.settings.max_retries, delay)
        self._sleep(delay)

    def check_credentials(self) -> None:
        """`BackendMisconfigured` if the API key cannot be read now (`editroute serve` checks at start); no call."""
        self._read_key()

    def _read_key(self) -> str:
        s = self.settings
        return read_secret(s.api_key_file, s.api_key_env, what="Gemini API key", file_setting="api_key_file")

    @property
    def _key_source(self) -> str:
        return (
            f"api_key_file {self.settings.api_key_file}"
            if self.settings.api_key_file
            else f"${self.settings.api_key_env}"
        )

    def close(self) -> None:
        self._client.close()


class _Skipped(Exception):
    """A call not started because another call of the same job had failed."""


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        input_text_tokens=a.input_text_tokens + b.input_text_tokens,
        input_image_tokens=a.input_image_tokens + b.input_image_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        if response.status_code == 200:
            raise BackendUnavailable(
                f"HTTP 200 with a body that is not JSON ({response.headers.get('content-type', 'no content-type')})"
            ) from None
        return response.text[:300]
