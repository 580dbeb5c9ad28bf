"""A job's identity and its stored result: the idempotency key, inputs read and decoded, result.json checked.

`job_key` hashes what decides the output (input bytes, prompt, options, seed, pinned backend; not the id);
`stored_result` accepts `DIR/<job id>/result.json` only if it names that key and every file it lists is on disk
with its recorded sha256 (and, with `decode=True`, every output image decodes), so a half-written or stale result
is never taken for a done job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from backends.base import EditRequest
from backends.errors import InvalidRequest
from backends.images import InputImage
from pipeline.jobs import Job
from pipeline.run.files import sha256_file

RESULT_FILE = "result.json"


def read_inputs(request: EditRequest) -> list[bytes]:
    """Raw bytes of every input (images, then mask, then markup): what the key hashes and what gets decoded.
    A remote reference (file id or URL) stands for itself: its bytes are the provider's to fetch."""
    out = []
    for i, (field_name, img) in enumerate(request.inputs):
        if img.is_remote:
            out.append(img.ref.encode())
            continue
        try:
            out.append(img.read())
        except OSError as exc:
            name = field_name if field_name in ("mask", "markup") else f"image[{i}]"
            raise InvalidRequest(
                f"{name}: cannot read {img.name}: {exc.strerror or exc}", field=name, value=img.name
            ) from None
    return out


# Options added after ledgers existed: hashed only when set, so an older job's key (and its resume) is unchanged.
_NEWER_OPTIONS = ("complexity", "moderation", "safety_identifier", "frame_count", "frame_duration_ms")


def job_key(job: Job, raw: Sequence[bytes] | None = None) -> str:
    """sha256 of what decides the output: input bytes, prompt, options, seed, pinned backend (not the id)."""
    r = job.request
    h = hashlib.sha256()
    for (_, img), data in zip(r.inputs, raw if raw is not None else read_inputs(r), strict=True):
        h.update(img.sha256 if img.data is data else hashlib.sha256(data).digest())  # in memory: hashed once
    h.update(
        json.dumps(
            {
                "mask": r.mask is not None,
                "prompt": r.prompt,
                "size": r.size,
                "quality": r.quality,
                "n": r.n,
                "output_format": r.output_format,
                "output_compression": r.output_compression,
                "background": r.background,
                "input_fidelity": r.input_fidelity,
                "seed": r.seed,
                "backend": job.backend,
                **{k: getattr(r, k) for k in _NEWER_OPTIONS if getattr(r, k) is not None},
                **({"markup": True} if r.markup is not None else {}),
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


def materialize(request: EditRequest, raw: Sequence[bytes]) -> EditRequest:
    """Decode every input from the bytes already read (a corrupt file raises InvalidRequest here). An image that
    already carries its bytes was decoded when they were loaded (an upload to `editroute serve`): kept as is."""

    def load(img: InputImage, data: bytes, name: str) -> InputImage:
        if img.data is not None or img.is_remote:
            return img
        return replace(InputImage.from_bytes(data, name=img.name, field=name), path=img.path)

    loaded = [load(img, data, name) for (name, img), data in zip(request.inputs, raw, strict=True)]
    n = len(request.images)
    layers = iter(loaded[n:])
    mask = next(layers) if request.mask is not None else None
    markup = next(layers) if request.markup is not None else None
    return replace(request, images=tuple(loaded[:n]), mask=mask, markup=markup)


def stored_result(out_dir: Path, job_id: str, key: str, *, decode: bool = False) -> dict[str, Any] | None:
    """result.json for this key, if it and every file it lists exist with the recorded sha256; with `decode`, each
    output image must also decode (what a result a crash left behind must show before it is adopted)."""
    path = out_dir / job_id / RESULT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("idempotency_key") != key:
        return None
    for entry in [*data.get("outputs", []), *data.get("artifacts", [])]:
        try:
            if sha256_file(out_dir / entry["path"]) != entry["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    if decode and not all(_decodes(out_dir / o["path"]) for o in data.get("outputs", [])):
        return None
    return data


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any decoder failure means the file is not a whole image
        return False
