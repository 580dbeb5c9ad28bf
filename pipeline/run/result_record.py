"""What a done job leaves in its folder: its files (outputs `<k>.<format>`, then the backend's artifacts under safe
names), each listed with its sha256, and the record result.json keeps (backend, model, cost, usage, timings, seed,
reasons, attempts, what was asked). Building them writes nothing: `execute._finish` writes them durably."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.base import EditResult
from pipeline.jobs import Job
from pipeline.routing import Decision
from pipeline.run.results import RESULT_FILE

_SAFE_ARTIFACT = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")


def result_contents(
    job: Job, key: str, dec: Decision, result: EditResult, attempt_id: int, tried: list[dict[str, Any]]
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """(name, bytes) of every file of a job done by `result` (the last of `tried`), result.json last (it vouches
    for the others: sha256 each, so a crash mid-way is never adopted), and result.json's content."""
    files = [(f"{k}.{result.output_format}", data) for k, data in enumerate(result.images)]
    n_images = len(files)
    for name, data in result.artifacts.items():
        if not _SAFE_ARTIFACT.match(name) or name == RESULT_FILE:
            name = "artifact-" + hashlib.sha256(name.encode()).hexdigest()[:12]
        files.append((name, data))
    listed = [{"path": f"{job.id}/{name}", "sha256": hashlib.sha256(data).hexdigest()} for name, data in files]
    record = {
        # `backend` is the policy's name for it, which the ledger and the report use
        "job_id": job.id,
        "idempotency_key": key,
        "backend": tried[-1]["backend"],
        "model": result.model,
        "cost_usd": str(result.cost_usd),
        "estimate_usd": str(dec.estimate.usd) if dec.estimate else None,
        "usage": result.usage.to_dict(),
        "timings": dict(result.timings),
        "seed": result.seed,
        "quality": result.quality,
        "size": result.size,
        "output_format": result.output_format,
        "background": result.background,
        "reasons": list(dec.reasons),
        "attempts": tried,
        "attempt_id": attempt_id,  # the ledger's row for the call that made this (adoption bills it)
        "outputs": listed[:n_images],
        "artifacts": listed[n_images:],
        "extras": jsonable(result.extras),
        "tags": list(job.tags),
        "request": request_facts(job),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return [*files, (RESULT_FILE, json.dumps(record, indent=2).encode())], record


def request_facts(job: Job) -> dict[str, Any]:
    """What was asked, for people reviewing the result (`editroute review`): the prompt, the tier the policy
    scored, and where the inputs are (None for an upload, which is not kept)."""
    r = job.request

    def where(img: Any) -> str | None:
        return str(Path(img.path).resolve()) if img is not None and img.path is not None else None

    return {
        "prompt": r.prompt,
        "quality": r.quality,
        "images": [where(img) for img in r.images],
        "mask": where(r.mask),
    }


def jsonable(value: Any) -> Any:
    """`value` as result.json can hold it: a mapping of values JSON cannot hold keeps their repr."""
    try:
        json.dumps(value)
        return dict(value) if isinstance(value, Mapping) else value
    except TypeError:
        return {k: repr(v) for k, v in dict(value).items()} if isinstance(value, Mapping) else repr(value)
