"""Each job's call journal on disk: what resumable backends saved about their calls (`backends.journal`), kept in
`DIR/<job id>/.journal/` so that a rerun after a crash finishes from it instead of calling, and paying, again.

    store = JournalStore(out_dir)
    journal = store.for_call(ledger, job_id, key, backend, attempt_id, hosted=True)  # one per backend call
    # the executor: journal.started(), then backend.edit(request, journal=journal) for a resumable backend
    store.pending(job_id, key)  # what a rerun can finish from: [Pending(backend, attempt_ids)], newest first
    store.clear(job_id)         # the job is done: its outputs hold everything

`started()` records in the ledger, durably, that the call is going out (so a crash is known to have cut a call
off, or to have found the job merely queued) and, for a backend that will save, makes the folder, so that saving
an answer afterwards costs one file fsync and one folder fsync (`discard_empty` removes it if nothing was saved).

One file per record, `<16 hex>.rec`: a JSON header line (job, idempotency key, backend, ledger attempt, kind,
key, data, the body's length and CRC-32), then the raw body. `save` writes it to a temp name and renames it into
place at once (from then on a killed process cannot lose it), then fsyncs the file and the folder before it
returns (from then on neither can a power cut; `files.write_record`). A record whose body does not match its
header (torn by a power cut before the fsync), or made for other inputs (another idempotency key), is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.journal import JournalRecord
from pipeline.ledger import Ledger
from pipeline.run.files import fsync_dir, remove_stale_temps, write_record

log = logging.getLogger(__name__)

JOURNAL_DIR = ".journal"


@dataclass(frozen=True)
class Pending:
    """What a rerun can finish from on `backend`: the ledger attempts whose calls saved it (newest last)."""

    backend: str
    attempt_ids: tuple[int, ...]
    saved_at: float


@dataclass(frozen=True)
class _Stored:
    header: dict[str, Any]
    record: JournalRecord


class JournalStore:
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    def folder(self, job_id: str) -> Path:
        return self.out_dir / job_id / JOURNAL_DIR

    def for_call(
        self, ledger: Ledger, job_id: str, key: str, backend: str, attempt_id: int, *, hosted: bool = True
    ) -> AttemptJournal:
        return AttemptJournal(self.folder(job_id), ledger, job_id, key, backend, attempt_id, hosted)

    def pending(self, job_id: str, key: str) -> list[Pending]:
        """Backends with saved records for these inputs, the most recently saved first."""
        by_backend: dict[str, list[_Stored]] = {}
        for stored in _read_all(self.folder(job_id)):
            if stored.header.get("idempotency_key") == key:
                by_backend.setdefault(str(stored.header["backend"]), []).append(stored)
        out = [
            Pending(
                backend,
                tuple(sorted({int(s.header["attempt_id"]) for s in found})),
                max(float(s.header.get("saved_at", 0)) for s in found),
            )
            for backend, found in by_backend.items()
        ]
        return sorted(out, key=lambda p: -p.saved_at)

    def tidy(self, job_id: str) -> int:
        """Remove temp files a killed writer left in the job's folder and its journal; how many."""
        return remove_stale_temps(self.out_dir / job_id) + remove_stale_temps(self.folder(job_id))

    def discard_empty(self, job_id: str) -> None:
        """After a failed job: its journal folder, and its own folder, if nothing is in them (no clutter)."""
        for folder in (self.folder(job_id), self.out_dir / job_id):
            with contextlib.suppress(OSError):  # not empty, or not there
                folder.rmdir()

    def clear(self, job_id: str) -> None:
        """The job is done and its outputs are on disk: nothing is left to resume."""
        folder = self.folder(job_id)
        if folder.is_dir():
            try:
                shutil.rmtree(folder)
            except OSError as exc:  # harmless: a done job never reads its journal
                log.warning("job %s: could not remove its journal %s: %s", job_id, folder, exc)


class AttemptJournal:
    """The journal of one backend call (`backends.journal.CallJournal`), scoped to the job and the backend;
    `started()` is the executor's signal that the call is about to go out."""

    def __init__(
        self, folder: Path, ledger: Ledger, job_id: str, key: str, backend: str, attempt_id: int, hosted: bool
    ) -> None:
        self.folder, self.ledger = folder, ledger
        self.job_id, self.key, self.backend, self.attempt_id, self.hosted = job_id, key, backend, attempt_id, hosted
        # (safe from a kill, durable) perf_counter() moments of each save, for benchmarks/double_pay_window.py
        self.saved: list[tuple[float, float]] = []

    def started(self, *, will_save: bool = True) -> None:
        """The call is about to go out. `will_save`: the backend takes the journal (make its folder now, off the
        path between an answer arriving and it being durable)."""
        if will_save and not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.folder.parent)
            fsync_dir(self.folder.parent.parent)
        self.ledger.call_started(self.attempt_id, hosted=self.hosted)

    def load(self, kind: str | None = None) -> list[JournalRecord]:
        found = [
            s
            for s in _read_all(self.folder)
            if s.header.get("idempotency_key") == self.key
            and s.header.get("backend") == self.backend
            and (kind is None or s.record.kind == kind)
        ]
        return [s.record for s in sorted(found, key=lambda s: float(s.header.get("saved_at", 0)))]

    def save(self, record: JournalRecord) -> None:
        body = record.body
        header = {
            "v": 1,
            "job_id": self.job_id,
            "idempotency_key": self.key,
            "backend": self.backend,
            "attempt_id": self.attempt_id,
            "kind": record.kind,
            "key": record.key,
            "data": dict(record.data),
            "body_len": None if body is None else len(body),
            "body_crc32": None if body is None else zlib.crc32(body),
            "saved_at": time.time(),
        }
        line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        try:
            if not self.folder.is_dir():  # (started() made it, for a backend that saves)
                self.folder.mkdir(parents=True, exist_ok=True)
            visible = write_record(self.folder, self._name(record), [line, body or b""])
        except OSError as exc:  # the answer is still in hand: go on without the safety net, and say so
            log.error(
                "job %s: could not journal %s's answer (%s); a crash before its outputs are written would pay again",
                self.job_id,
                self.backend,
                exc,
            )
            return
        self.saved.append((visible, time.perf_counter()))

    def drop(self, record: JournalRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / self._name(record))
            fsync_dir(self.folder)

    def _name(self, record: JournalRecord) -> str:
        slot = f"{self.backend}\0{record.kind}\0{record.key}".encode()
        return hashlib.sha256(slot).hexdigest()[:16] + ".rec"


def _read_all(folder: Path) -> list[_Stored]:
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.rec")):
        try:
            raw = path.read_bytes()
            line, _, body = raw.partition(b"\n")
            header = json.loads(line)
            if header.get("body_len") is None:
                data = None
            elif header["body_len"] == len(body) and header.get("body_crc32") == zlib.crc32(body):
                data = body
            else:
                log.warning("journal record %s does not match its header; ignored", path)
                continue
            record = JournalRecord(
                str(header["kind"]), str(header.get("key", "")), dict(header.get("data") or {}), data
            )
            int(header["attempt_id"])  # a header without one is not ours
            out.append(_Stored(header, record))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("journal record %s cannot be read; ignored", path)
    return out
