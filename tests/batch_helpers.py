"""Helpers for batch tests: manifests of small generated images, policies over fake backends, and a fake
backend that keeps a bill (one line per completed call) and can hang its calls (to be killed mid-call)."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from backends.base import EditRequest, EditResult
from backends.errors import BackendUnavailable, EditError, InvalidRequest
from backends.standins import FunctionBackend
from tests.imagery import image_bytes, mask_bytes

BLOCK_ENV = "EDITROUTE_TEST_BLOCK_AFTER"


@dataclass
class BillingBackend(FunctionBackend):
    """A FunctionBackend whose completed calls are appended to `billing_file` (what a provider would bill).
    With $EDITROUTE_TEST_BLOCK_AFTER=K, every call after the K-th hangs (never completes, never bills)."""

    billing_file: str = ""
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def edit(self, request: EditRequest) -> EditResult:
        with self._lock:
            self._count += 1
            number = self._count
        block_after = os.environ.get(BLOCK_ENV)
        if block_after is not None and number > int(block_after):
            time.sleep(600)
        result = super().edit(request)
        with self._lock, open(self.billing_file, "a", encoding="utf-8") as fh:
            fh.write(f"{request.job_id}\n")
        return result


def write_manifest(
    folder: Path,
    count: int,
    *,
    corrupt: set[int] = frozenset(),
    missing: set[int] = frozenset(),
    name: str = "jobs.jsonl",
    n: int = 1,
) -> Path:
    """`count` masked jobs job00..; `corrupt` indexes get a truncated image (passes the header check, fails
    to decode), `missing` indexes name a file that does not exist (a manifest problem)."""
    img_dir = folder / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    (img_dir / "mask.png").write_bytes(mask_bytes(64, 64))
    lines = []
    for i in range(count):
        data = image_bytes(64, 64)
        image = img_dir / f"p{i:02d}.png"
        image.write_bytes(data[:-60] if i in corrupt else data)
        entry = {
            "id": f"job{i:02d}",
            "image": "img/missing.png" if i in missing else f"img/p{i:02d}.png",
            "mask": "img/mask.png",
            "prompt": f"white studio backdrop, variant {i}",
            "n": n,
            "tags": ["product"],
        }
        lines.append(json.dumps(entry))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


STANDIN_KEY = "sk-standin-test-key-0123456789"  # the loopback stand-in server's key, not a real credential

# The `api` backend against the loopback OpenAI stand-in, for a policy's `backends:` (format with url=...).
API_BACKEND = """\
  api:
    kind: openai
    model: gpt-image-2.6-sunburst
    base_url: {url}
    max_retries: 1
    concurrency: 4
"""


def write_policy(folder: Path, body: str, name: str = "policy.yaml") -> Path:
    path = folder / name
    path.write_text(body)
    return path


FAKE_POLICY = """
backends:
  fast:
    kind: function
    cost_per_image: "0.01"
    latency_s: {latency}
  spare:
    kind: function
    cost_per_image: "0.02"
quality:
  fast: 0.8
  spare: 0.8
objective: {{type: cheapest}}
fallbacks:
  fast: [spare]
{extra}
"""


@dataclass
class BatchSettings:
    max_batch: int = 4


@dataclass
class BatchingFake(FunctionBackend):
    """A GPU-like backend that can share one call between jobs (the interface SDXL offers): jobs with equal
    `batch_key` (size, quality; None for a prompt containing "alone") may go to `edit_batch` together.
    `calls` lists the job ids of each call made; `call_latency_s` is slept once per call, like one GPU pass.
    Job ids in `refuse` get InvalidRequest and those in `down` BackendUnavailable, inside a shared call too."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    gpu_bound: bool = True
    call_latency_s: float = 0.0
    batched_calls: list[list[str]] = field(default_factory=list)
    refuse: frozenset[str] = frozenset()
    down: frozenset[str] = frozenset()

    def batch_key(self, request: EditRequest):
        return None if "alone" in request.prompt else (request.size, request.quality)

    def edit(self, request: EditRequest) -> EditResult:
        self.batched_calls.append([request.job_id])
        time.sleep(self.call_latency_s)
        return self._one(request)

    def edit_batch(self, requests):
        self.batched_calls.append([r.job_id for r in requests])
        time.sleep(self.call_latency_s)
        out = []
        for r in requests:
            try:
                out.append(self._one(r))
            except EditError as exc:
                out.append(exc)
        return out

    def _one(self, request: EditRequest) -> EditResult:
        if request.job_id in self.refuse:
            raise InvalidRequest("prompt: refused by the fake", field="prompt", job_id=request.job_id)
        if request.job_id in self.down:
            raise BackendUnavailable("the fake GPU is down for this job", job_id=request.job_id)
        return FunctionBackend.edit(self, request)
