"""A loopback STAND-IN for Google's Gemini API `generateContent` (not the real service), speaking its wire format.

`POST /{v1|v1beta}/models/{model}:generateContent` with the key in `x-goog-api-key` (or `?key=`), camelCase or
snake_case bodies, image options in `generationConfig.imageConfig` or `generationConfig.responseFormat.image`.
Answers are Google's: `candidates[].content.parts[]` (text + `inlineData`), `finishReason`, `usageMetadata` with
per-modality token details at the model's figures from `configs/prices.yaml`, `modelVersion`, `responseId`.
Errors use Google's envelope `{"error": {code, message, status, details}}` with its real status codes:
  400 INVALID_ARGUMENT (bad JSON field, aspect ratio, too many images; a wrong key: reason API_KEY_INVALID),
  403 PERMISSION_DENIED (no key), 404 NOT_FOUND (unknown or retired model: `retired=` adds more),
  429 RESOURCE_EXHAUSTED with QuotaFailure + RetryInfo.retryDelay (over `rate_limit_rpm`, or scripted).
Safety outcomes come back as HTTP 200 without an image, triggered by words in the prompt (`TRIGGERS`):
`promptFeedback.blockReason`, `finishReason: IMAGE_SAFETY | NO_IMAGE`, a text-only answer.
`script=[503, "drop", {"status": 429, "retry_delay": "0.01s"}, "ok", ...]`: one item per request.

    with FakeGeminiServer(api_key="AIza-test") as server:
        backend = GeminiEditBackend("gemini", Settings(base_url=server.base_url))
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

from backends.pricing import PriceTable, load_prices
from backends.standins.loopback import (
    LoopbackServer,
    Reply,
    Request,
    RequestWindow,
    StandinService,
    json_reply,
    next_failure,
    serve_until_interrupted,
)

BANNER = "STAND-IN for Google's Gemini API (loopback fake, not the real service)"
TRIGGERS = {
    "block-prompt": "prompt_blocked",
    "image-safety": "IMAGE_SAFETY",
    "no-image": "NO_IMAGE",
    "text-only": "text_only",
}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GoogleError(Exception):
    def __init__(self, code: int, message: str, details: list[dict] | None = None, status: str | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or []
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")

    def reply(self) -> Reply:
        return json_reply(
            self.code,
            {"error": {"code": self.code, "message": self.message, "status": self.status, "details": self.details}},
        )


def quota_error(model: str, retry_delay: str, *, limit: int = 10) -> GoogleError:
    """Google's 429: QuotaFailure naming the metric, Help, and RetryInfo with the wait."""
    return GoogleError(
        429,
        f"You exceeded your current quota, please check your plan and billing details. "
        f"Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_paid_tier_"
        f"requests, limit: {limit}, model: {model}. Please retry in {retry_delay}.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-PaidTier",
                        "quotaDimensions": {"model": model, "location": "global"},
                        "quotaValue": str(limit),
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ],
    )


@dataclass
class RecordedCall:
    """What reached the server. The key is never kept: only how it came (header, query or none)."""

    path: str
    model: str | None
    auth: str | None
    body: Any
    status: int = 0
    response_usage: dict | None = None  # the usageMetadata it answered with, to check billing against


class FakeGeminiServer(StandinService):
    banner = BANNER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        script: list | None = None,
        rate_limit_rpm: int | None = None,
        rate_window_s: float = 60.0,
        retired: tuple[str, ...] = (),
        output_mime: str = "image/png",
        thinking_tokens: int = 96,
        latency_s: float = 0.0,
        prices: PriceTable | None = None,
        port: int = 0,
    ) -> None:
        self._api_key = api_key
        self.script = collections.deque(script or [])
        self.rate_limit_rpm, self.rate_window_s = rate_limit_rpm, rate_window_s
        self._window = RequestWindow(rate_limit_rpm, rate_window_s)
        self.retired = set(retired)
        self.output_mime, self.thinking_tokens, self.latency_s = output_mime, thinking_tokens, latency_s
        self.prices = prices or load_prices()
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._route, name="gemini", port=port)
        self.served = 0  # successful answers, for fake-model variety

    @property
    def base_url(self) -> str:  # what `base_url:` takes (the API version is a separate setting)
        return self._server.root_url

    # ---- request handling (handler threads) --------------------------------------------------------

    def _route(self, req: Request) -> Reply:
        model = _model_of(req.path)
        try:
            body = req.json()
        except ValueError:
            body = None
        rec = RecordedCall(path=req.path, model=model, auth=None, body=body)
        with self._lock:
            self.calls.append(rec)
        if self.latency_s:
            time.sleep(self.latency_s)
        try:
            payload = self._handle(req, rec, model, body)
            rec.response_usage = payload.get("usageMetadata")
            reply = json_reply(200, payload)
        except GoogleError as err:
            reply = err.reply()
        rec.status = reply.status
        return reply

    def _handle(self, req: Request, rec: RecordedCall, model: str | None, body: Any) -> dict:
        self._check_auth(req, rec)
        self._scripted(model or "")
        if req.method != "POST" or model is None:
            raise GoogleError(404, f"Method not found: {req.method} {req.path}")
        self._rate_limit(model)
        entry = self.prices.gemini.get("models", {}).get(model)
        if entry is None or entry.get("status") == "retired" or model in self.retired:
            version = req.path.split("/")[1]
            raise GoogleError(
                404,
                f"models/{model} is not found for API version {version}, or is not supported "
                "for generateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        if body is None:
            raise GoogleError(400, "Invalid JSON payload received. Unexpected end of string.")
        from backends.standins.gemini_model import answer  # the API's rules and the fake "model"

        with self._lock:
            self.served += 1
            k = self.served
        return answer(self, model, entry, body, k)

    def _check_auth(self, req: Request, rec: RecordedCall) -> None:
        presented = req.headers.get("x-goog-api-key")
        rec.auth = "header" if presented else "query" if "key" in req.query else None
        presented = presented or req.query.get("key")
        if self._api_key is None:
            return
        if not presented:
            raise GoogleError(
                403,
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API.",
            )
        if presented != self._api_key:
            raise GoogleError(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": "API key not valid. Please pass a valid API key.",
                    },
                    {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {presented}"},
                ],
            )

    def _scripted(self, model: str) -> None:
        spec = next_failure(self.script, self._lock)
        if spec is None:
            return
        if spec["status"] == 429:
            raise quota_error(model, spec.get("retry_delay", "1s"), limit=0 if spec.get("no_quota") else 10)
        raise GoogleError(
            spec["status"],
            spec.get(
                "message",
                "An internal error has occurred. Please retry or "
                "report in https://developers.generativeai.google/guide/troubleshooting",
            ),
        )

    def _rate_limit(self, model: str) -> None:
        wait = self._window.admit()
        if wait is not None:
            raise quota_error(model, f"{wait:.3f}s", limit=self.rate_limit_rpm or 0)


def _model_of(path: str) -> str | None:
    """`/v1beta/models/gemini-x:generateContent` -> `gemini-x`."""
    parts = path.split("/")
    if (
        len(parts) == 4
        and parts[1] in ("v1", "v1beta")
        and parts[2] == "models"
        and parts[3].endswith(":generateContent")
    ):
        return parts[3].removesuffix(":generateContent")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=BANNER)
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--api-key", default=None, help="require this key (default: accept any)")
    ap.add_argument("--rpm", type=int, default=None, help="answer 429 above this many requests per minute")
    args = ap.parse_args(argv)
    server = FakeGeminiServer(api_key=args.api_key, rate_limit_rpm=args.rpm, port=args.port)
    return serve_until_interrupted(
        server,
        lambda s: [BANNER, f"  base_url: {s.base_url}   (base_url: of a kind: gemini backend)", "  Ctrl-C to stop"],
    )


if __name__ == "__main__":  # run the imported module's main, so gemini_* helpers and this share one error class
    from backends.standins.gemini_server import main as _main

    raise SystemExit(_main())


__all__ = ["BANNER", "FakeGeminiServer", "GoogleError", "RecordedCall", "TRIGGERS", "quota_error"]
