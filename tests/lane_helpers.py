"""Helpers for batch lane tests: manifests of jobs that can wait, a policy with a Batch API lane beside the
synchronous API (both on the loopback stand-in), and the ledger and stand-in read back."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from backends.standins import FakeOpenAIServer
from tests.imagery import image_bytes, mask_bytes

LANE_POLICY = """
backends:
  api:
    kind: openai
    model: gpt-image-2
    base_url: {url}
    max_retries: 0
  api-batch:
    kind: openai-batch
    model: gpt-image-2
    base_url: {url}
    max_retries: 1
    poll_interval: 0.02
    poll_max_interval: 0.1
    collect_s: {collect_s}
    max_requests_per_batch: {max_requests}
    image_upload: {upload}
quality:
  api: 0.8
  api-batch: 0.8
fallbacks:
  api-batch: [api]
{extra}
"""


def write_policy(
    folder: Path,
    url: str,
    *,
    max_requests: int = 50_000,
    collect_s: float = 60,
    upload: str = "files",
    extra: str = "",
) -> Path:
    path = folder / "policy.yaml"
    path.write_text(
        LANE_POLICY.format(url=url, max_requests=max_requests, collect_s=collect_s, upload=upload, extra=extra)
    )
    return path


def write_jobs(folder: Path, count: int, *, deadline: str | None = "24h", prompt: str = "studio backdrop") -> Path:
    """`count` jobs j0000.. sharing one reference image and mask (quality low, 1024x640, jpeg output: the smallest
    and cheapest output for the stand-in to render); each prompt ends with its job id, so outputs differ per job."""
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    (img / "ref.png").write_bytes(image_bytes(64, 64))
    (img / "mask.png").write_bytes(mask_bytes(64, 64))
    lines = []
    for i in range(count):
        entry = {
            "id": f"j{i:04d}",
            "image": "img/ref.png",
            "mask": "img/mask.png",
            "prompt": f"{prompt} for j{i:04d}",
            "quality": "low",
            "size": "1024x640",
            "output_format": "jpeg",
        }
        if deadline:
            entry["deadline"] = deadline
        lines.append(json.dumps(entry))
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def line_bills(api: FakeOpenAIServer) -> dict[str, list[Decimal]]:
    """What the stand-in billed per job (custom_id) over all its batches."""
    out: dict[str, list[Decimal]] = {}
    for _, cid, usd in api.batch_bills:
        out.setdefault(cid, []).append(usd)
    return out


def result_of(out: Path, job_id: str) -> dict:
    return json.loads((out / job_id / "result.json").read_text())
