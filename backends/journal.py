"""What a backend remembers about one job's calls outside the process, so that a rerun after a crash finishes
what was paid for instead of paying again: the one journal interface every hosted backend uses.

    class CallJournal(Protocol):
        def load(self, kind: str | None = None) -> list[JournalRecord]: ...  # what earlier runs saved for THIS job
        def save(self, record: JournalRecord) -> None: ...  # durable (written and fsynced) when it returns
        def drop(self, record: JournalRecord) -> None: ...  # forget one (e.g. a failed async job: submit afresh)

A backend that takes a journal says so with the class attribute `resumable = True` and the keyword
`edit(request, *, journal=None)`; the runner then hands it one journal per call, scoped to the job and the
backend (`pipeline.run` keeps it on disk beside the job's outputs), and calls other backends as before.
What each backend saves (`kind`, `key`):

  openai          "openai.response", ""   the raw HTTP body of the 200, saved the moment its last byte is in
                                          and BEFORE it is decoded; a rerun decodes the saved body and sends
                                          nothing (`OpenAIEditBackend.result_from_raw`)
  firefly         "firefly.job", part     the async job's id and status URL, saved right after the submit and
                                          before polling; a rerun polls it and submits nothing
  openai-batch    (the ledger instead)    every upload, batch and line, recorded by the runner's batch lane
                                          (`pipeline.ledger.batches`): one transaction for a batch's many
                                          lines rather than a record per job

Records never hold a secret. `MemoryJournal` keeps records for the process only (what `edit()` uses without a
runner); `FileJournal(path)` keeps them in one JSON file, for a single job run by hand.

What no journal can close: a request that went out and whose answer never came back (a crash or a dropped
connection in between). Its outcome is unknown: the backend raises `backends.errors.OutcomeUnknown` and the
runner counts the call as a possible charge, never as free.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class JournalRecord:
    """One thing a backend saved: `kind` names the backend's format, `key` which one within the job (a part
    number, a batch id; "" when there is only one). `data` is JSON; `body` raw bytes kept exactly."""

    kind: str
    key: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    body: bytes | None = None

    def same_slot(self, other: JournalRecord) -> bool:
        """`save` replaces a record of the same kind and key; `drop` removes it."""
        return (self.kind, self.key) == (other.kind, other.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "data": dict(self.data),
            "body": None if self.body is None else base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> JournalRecord:
        body = raw.get("body")
        return cls(
            kind=str(raw["kind"]),
            key=str(raw.get("key", "")),
            data=dict(raw.get("data") or {}),
            body=None if body is None else base64.b64decode(body),
        )


@runtime_checkable
class CallJournal(Protocol):
    def load(self, kind: str | None = None) -> list[JournalRecord]:
        """Records saved for this job (by this backend), oldest first; only `kind`'s when given."""
        ...

    def save(self, record: JournalRecord) -> None:
        """Keep `record` (replacing one of the same kind and key), durably: when this returns, a kill -9 or a
        power cut cannot lose it."""
        ...

    def drop(self, record: JournalRecord) -> None:
        """Forget the record of this kind and key (nothing to resume from it any more)."""
        ...


class MemoryJournal:
    """Records for the life of the process: resuming within one process only (the default without a runner)."""

    def __init__(self, records: list[JournalRecord] | None = None) -> None:
        self.records = list(records or [])
        self._lock = threading.Lock()

    def load(self, kind: str | None = None) -> list[JournalRecord]:
        with self._lock:
            return [r for r in self.records if kind is None or r.kind == kind]

    def save(self, record: JournalRecord) -> None:
        with self._lock:
            self.records = [r for r in self.records if not r.same_slot(record)] + [record]

    def drop(self, record: JournalRecord) -> None:
        with self._lock:
            self.records = [r for r in self.records if not r.same_slot(record)]


class FileJournal(MemoryJournal):
    """A JSON list in `path` (bodies in base64), replaced atomically and fsynced on every change: for one job
    run by hand. The runner uses its own per-job journal instead (`pipeline.run`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        raw = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else []
        super().__init__([JournalRecord.from_json(r) for r in raw])

    def save(self, record: JournalRecord) -> None:
        super().save(record)
        self._write()

    def drop(self, record: JournalRecord) -> None:
        super().drop(record)
        self._write()

    def _write(self) -> None:
        with self._lock:
            data = json.dumps([r.to_json() for r in self.records], indent=1)
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


def takes_journal(backend: Any) -> bool:
    """Whether `backend.edit` takes `journal=` (its class says `resumable = True`)."""
    return bool(getattr(backend, "resumable", False))
