"""A loopback STAND-IN for OpenAI's image edit API (not the real API), speaking its wire format.

`POST /v1/images/edits` as multipart (stdlib email parser) or JSON (`images: [{file_id} | {image_url}]`, data URLs,
https URLs served from `remote_images`), JSON out: `created`, `data[].b64_json`, `background`, `output_format`,
`quality`, `size`, `usage` (with `output_tokens_details`) computed from the same token tables editroute bills with
(`backends.pricing`), so costs are realistic. Each model's rules come from its capabilities in prices.yaml
(`accept_unverified=True` also applies its `unverified:` features, as if the real API took them). Also served:
`GET /v1/models[/{id}]` with `shutdown_date`, a minimal Files API (`POST /v1/files`, `GET /v1/files/{id}[/content]`)
whose ids the JSON edits resolve, and the Batch API for image edits (openai_batches.py: create, retrieve, list,
cancel; output and error files; completion delay, partial failures, expiry). Real error envelopes `{"error":
{message, type, param, code}}` with real status codes: `duplicate_parameter`, `unsupported_file_mimetype`,
`unknown_parameter`, `model_not_found` for retired and unknown models, `invalid_input_fidelity_model`, 401 on a
wrong key, 429 with retry-after(-ms) over a rate limit, moderation_blocked on a trigger word; plus scripted failures
(`script=[500, "drop", {"status": 429, "retry_after_ms": 20}, "ok"]`, one item per edit request). `stream=true`
answers with server-sent events: each partial image (the picture moving from the input to the result,
`stream_interval_s` apart) and the completed image, whose usage counts 100 output tokens per partial. Every
response carries `x-editroute-standin: openai`.

What it answered is recorded for crash tests: each `RecordedRequest` says when its answer was made
(`answered_at`: the API bills a 200 when it is generated, whether or not the client is still there), when its
last byte was written to the socket (`delivered_at`, None if the client had gone) and what it billed
(`billed_usd`). `before_answer(rec)`, if given, runs before each answer and may block (hold a request in flight).
The HTTP side (these records, the error envelope, the handler that times each answer) is openai_http.py.

    with FakeOpenAIServer(api_key="sk-test") as server:
        backend = OpenAIEditBackend("openai", Settings(base_url=server.base_url))

By hand: `python -m backends.standins.openai_server --port 8765`.
"""

from __future__ import annotations

import argparse
import collections
import math
import threading
from collections.abc import Callable
from decimal import Decimal

from backends.pricing import BatchRates, ModelPrices, PriceTable, load_prices, token_cost
from backends.standins.loopback import (
    LoopbackHTTP,
    RequestWindow,
    StandinService,
    next_failure,
    serve_until_interrupted,
)
from backends.standins.openai_http import (  # records and errors: also imported from here by the endpoint modules
    ApiError,
    Encoded,
    OpenAIHandler,
    RawBody,
    RecordedPart,
    RecordedRequest,
    parse_json,
    parse_multipart,
)

BANNER = "STAND-IN for OpenAI's image edit API (loopback fake, not the real service)"
# Text fields of a multipart edit (OpenAI's SDK sends these; `moderation` exists only in the JSON schema).
FIELDS = {
    "model",
    "prompt",
    "n",
    "size",
    "quality",
    "output_format",
    "output_compression",
    "background",
    "input_fidelity",
    "user",
    "stream",
    "partial_images",
    "response_format",
    "complexity",
    "safety_identifier",
    "frame_count",
    "frame_duration_ms",
}
JSON_FIELDS = (FIELDS - {"response_format"}) | {"images", "mask", "markup", "moderation"}
IMAGE_MIMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DEFAULT_MODEL = "gpt-image-2.5-sunburst"  # the last default the edit reference named (2.5 stage)


class FakeOpenAIServer(StandinService):
    banner = BANNER

    def __init__(
        self,
        port: int = 0,
        *,
        latency_s: float = 0.0,
        rate_limit_rpm: int | None = None,
        rate_window_s: float = 60.0,
        script: list | None = None,
        api_key: str | None = None,
        moderation_words: tuple[str, ...] = ("moderation-test",),
        auto_quality: str = "medium",
        prices: PriceTable | None = None,
        host: str = "127.0.0.1",
        accept_unverified: bool = False,
        cached_tokens: int = 0,
        remote_images: dict[str, bytes] | None = None,
        model_shutdowns: dict[str, str | None] | None = None,
        before_answer: Callable[[RecordedRequest], None] | None = None,
        stream_interval_s: float = 0.0,
        canned: bool = False,
        batch_delay_s: float = 0.0,
        batch_line_s: float = 0.0,
        batch_expire_after: int | None = None,
        batch_fail_marker: str | None = "batch-fail-test",
        before_batch: Callable[[str], None] | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.rate_limit_rpm, self.rate_window_s = rate_limit_rpm, rate_window_s
        self.script = collections.deque(script or [])
        self._api_key = api_key
        self.moderation_words = tuple(w.lower() for w in moderation_words)
        self.auto_quality = auto_quality
        self.prices = prices or load_prices()
        self.accept_unverified = accept_unverified  # act as if the API took each model's `unverified:` features
        self.cached_tokens = cached_tokens  # report this many input tokens as cached (input_tokens_details)
        self.remote_images = dict(remote_images or {})  # https URL -> bytes, what "downloading" a URL finds
        self.model_shutdowns = dict(model_shutdowns or {})  # GET /models: shutdown_date overrides per model id
        self.stream_interval_s = stream_interval_s  # a streamed edit: seconds between its events
        # Benchmarks: answer every edit after the first with that first answer, without parsing or computing
        # anything, so the stand-in costs no CPU beside what it measures (a real API's work is on its servers).
        self.canned = canned
        self._canned: dict | None = None
        self.files: dict[str, dict] = {}  # the Files API: id -> {object fields..., "content": bytes}
        self.before_answer = before_answer
        # The Batch API (openai_batches.py): id -> Batch object (+ bookkeeping), creation order, what each line
        # that ran was billed at Batch rates (batch id, custom_id, USD), and the knobs its module doc describes.
        self.batches: dict[str, dict] = {}
        self.batch_order: list[str] = []
        self.batch_bills: list[tuple[str, str, Decimal]] = []
        self.batches_script: collections.deque = collections.deque()
        self.batch_delay_s, self.batch_line_s = batch_delay_s, batch_line_s
        self.batch_expire_after, self.batch_fail_marker = batch_expire_after, batch_fail_marker
        self.before_batch = before_batch
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._window = RequestWindow(rate_limit_rpm, rate_window_s)
        self._server = LoopbackHTTP(OpenAIHandler, self, name="openai", host=host, port=port)

    @property
    def base_url(self) -> str:
        return self._server.root_url + "/v1"

    # ---- request handling (called from the handler thread) ---------------------------------------

    def _check_auth(self, rec: RecordedRequest, headers) -> None:
        bearer = headers.get("Authorization", "")
        style, presented = (
            ("bearer", bearer[7:])
            if bearer.startswith("Bearer ")
            else ("api-key", headers.get("api-key"))
            if headers.get("api-key")
            else (None, None)
        )
        rec.auth = style
        if self._api_key is not None and presented != self._api_key:
            shown = f"{presented[:4]}{'*' * 10}{presented[-4:]}" if presented and len(presented) > 8 else "***"
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _scripted(self) -> None:
        spec = next_failure(self.script, self._lock)
        if spec is None:
            return
        status = spec["status"]
        headers = {}
        if "retry_after_ms" in spec:
            headers["retry-after-ms"] = str(spec["retry_after_ms"])
        if "retry_after" in spec:
            headers["retry-after"] = str(spec["retry_after"])
        for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"):
            if name in spec:
                headers[name] = str(spec[name])
        if status == 429:
            raise ApiError(
                429,
                spec.get("message", "Rate limit reached for images per min (IPM) (stand-in)."),
                type="requests",
                code=spec.get("code", "rate_limit_exceeded"),
                headers=headers,
            )
        raise ApiError(
            status,
            spec.get("message", "The server had an error while processing your request."),
            type=spec.get("type", "server_error"),
            param=spec.get("param"),
            code=spec.get("code"),
            headers=headers,
        )

    def _rate_limit(self) -> None:
        wait = self._window.admit()
        if wait is not None:
            raise ApiError(
                429,
                f"Rate limit reached for images per min (IPM): Limit {self.rate_limit_rpm}. "
                f"Please try again in {wait:.3f}s.",
                type="requests",
                code="rate_limit_exceeded",
                headers={
                    "retry-after-ms": str(max(1, round(wait * 1000))),
                    "retry-after": str(max(1, math.ceil(wait))),
                },
            )

    @property
    def edit_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/images/edits")]

    @property
    def batch_creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches")]

    def handle(self, rec: RecordedRequest, headers, body: bytes) -> dict | RawBody:
        if self._canned is not None and rec.method == "POST" and rec.path.rstrip("/").endswith("/images/edits"):
            self._check_auth(rec, headers)  # canned (benchmarks): the first answer again, nothing parsed or made
            return self._canned
        multipart = rec.content_type.startswith("multipart/form-data")
        parts = rec.payloads if rec.parts else parse_multipart(rec, body) if multipart else []
        rec.payloads = []  # the bytes are not kept for every recorded request
        path = rec.path.rstrip("/")
        if rec.content_type.startswith("application/json") and (body or not path.endswith("/cancel")):
            rec.json = parse_json(body)
        self._check_auth(rec, headers)
        from backends.standins import openai_batches, openai_files  # models, files, batches: the small endpoints

        if "/batches" in path:
            return openai_batches.route(self, rec)
        if rec.method == "GET" or path.endswith("/files"):
            return openai_files.route(self, rec, parts)
        self._scripted()
        self._rate_limit()
        if not path.endswith("/images/edits"):
            raise ApiError(404, f"Invalid URL ({rec.method} {rec.path})", code="unknown_url")
        from backends.standins.openai_edit import run_edit, run_json_edit  # the API's rules and the fake "model"

        if multipart:
            answer = run_edit(self, rec, parts)
            if self.canned and not hasattr(answer, "events"):
                self._canned = Encoded(answer)
            return answer
        if rec.json is not None:
            return run_json_edit(self, rec, rec.json)
        raise ApiError(
            400,
            "Expected a multipart/form-data or application/json body for image edits.",
            code="invalid_content_type",
        )

    def bill(self, rec: RecordedRequest, payload: dict) -> Decimal:
        """What a 200 answer costs at the stand-in's prices."""
        model = rec.fields.get("model") or (rec.json or {}).get("model") or DEFAULT_MODEL
        return usage_cost(self.prices.model(model), payload)


def usage_cost(prices: ModelPrices | BatchRates, payload: dict) -> Decimal:
    """What an answer's `usage` costs at `prices` (a model's, or its Batch rates)."""
    usage = payload.get("usage") or {}
    details, out = usage.get("input_tokens_details") or {}, usage.get("output_tokens_details") or {}
    return token_cost(
        prices,
        text_in=int(details.get("text_tokens") or 0),
        image_in=int(details.get("image_tokens") or 0),
        image_out=int(out.get("image_tokens") or 0),
        text_out=int(out.get("text_tokens") or 0),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=BANNER)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    ap.add_argument("--rpm", type=int, default=None, help="answer 429 above this many requests per minute")
    ap.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    ap.add_argument(
        "--canned", action="store_true", help="answer every edit after the first with the first's answer (benchmarks)"
    )
    args = ap.parse_args(argv)
    server = FakeOpenAIServer(
        args.port,
        host=args.host,
        latency_s=args.latency,
        rate_limit_rpm=args.rpm,
        api_key=args.api_key,
        canned=args.canned,
    )
    return serve_until_interrupted(
        server,
        lambda s: [
            BANNER,
            f"  base_url: {s.base_url}",
            f"  try: editroute edit --backend openai --base-url {s.base_url} --image in.png --prompt '...' --out out/",
            "  Ctrl-C to stop",
        ],
    )


if __name__ == "__main__":  # run the imported module's main, so openai_edit and this share one ApiError class
    from backends.standins.openai_server import main as _main

    raise SystemExit(_main())


__all__ = ["FakeOpenAIServer", "RecordedRequest", "RecordedPart", "ApiError", "RawBody"]
