"""Jobs: one edit to run, as a manifest entry or an HTTP request becomes it."""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import EditRequest


@dataclass(frozen=True)
class Job:
    id: str
    request: EditRequest  # images probed (format, size) but not read; request.job_id == id
    tags: tuple[str, ...] = ()
    backend: str | None = None  # pinned by the manifest entry, bypassing the objective (not capabilities)
    line: int | None = None  # where it came from in the manifest, for error messages
