"""Submitted async jobs, remembered outside the process: a crashed run resumes polling instead of paying again.

Firefly bills when a job is submitted, and a job keeps running (and stays pollable) after the process that
submitted it dies. So `FireflyEditBackend.edit(request, journal=...)` works with a `JobJournal`:

  1. `journal.load()`  the refs an earlier run saved for THIS job (the runner keys the journal by job id);
  2. for each part of the request (n > 4 is several jobs) with a saved ref: poll it, submit nothing;
  3. for each part without one: submit, then `journal.save(ref)` BEFORE the first poll (the hook the runner
     persists: the ledger row must be durable when `save` returns);
  4. a job that ends failed, cancelled or timed out is `journal.drop(ref)`ped: a rerun submits it afresh.

A `JobRef` holds no secret (job id, status URL, part, variations, mode) and round-trips through JSON
(`to_dict` / `from_dict`). Without a journal, `edit()` uses a `MemoryJournal`: nothing survives the process.
`FileJournal(path)` is a durable one (a JSON file replaced atomically) for a single job, e.g. `editroute edit`.
The one window no journal closes: a crash after the submit was sent and before its answer arrived (Firefly has
no idempotency key). That outcome is unknown and must be counted as a possible charge.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class JobRef:
    part: int  # which part of the request (n > 4 variations, or n instruct edits, are several jobs)
    mode: str  # fill | expand | instruct
    job_id: str
    status_url: str
    variations: int
    submitted_at: float  # time.time()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRef:
        return cls(
            part=int(data["part"]),
            mode=str(data["mode"]),
            job_id=str(data["job_id"]),
            status_url=str(data["status_url"]),
            variations=int(data["variations"]),
            submitted_at=float(data["submitted_at"]),
        )


class JobJournal(Protocol):
    def load(self) -> list[JobRef]: ...

    def save(self, ref: JobRef) -> None:
        """Persist durably before returning: polling starts right after."""
        ...

    def drop(self, ref: JobRef) -> None: ...


class MemoryJournal:
    def __init__(self, refs: list[JobRef] | None = None) -> None:
        self.refs = list(refs or [])
        self._lock = threading.Lock()

    def load(self) -> list[JobRef]:
        with self._lock:
            return list(self.refs)

    def save(self, ref: JobRef) -> None:
        with self._lock:
            self.refs = [r for r in self.refs if r.part != ref.part] + [ref]

    def drop(self, ref: JobRef) -> None:
        with self._lock:
            self.refs = [r for r in self.refs if r != ref]


class FileJournal(MemoryJournal):
    """A JSON list in `path`, written to a temp file, fsynced and renamed on every change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        refs = [JobRef.from_dict(d) for d in json.loads(self.path.read_text())] if self.path.exists() else []
        super().__init__(refs)

    def save(self, ref: JobRef) -> None:
        super().save(ref)
        self._write()

    def drop(self, ref: JobRef) -> None:
        super().drop(ref)
        self._write()

    def _write(self) -> None:
        with self._lock:
            data = json.dumps([r.to_dict() for r in self.refs], indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
