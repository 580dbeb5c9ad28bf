"""Submitted async jobs, remembered outside the process: a crashed run resumes polling instead of paying again.

Firefly bills when a job is submitted, and a job keeps running (and stays pollable) after the process that
submitted it dies. So `FireflyEditBackend.edit(request, journal=...)` works with the shared journal
(`backends.journal.CallJournal`; records of kind `JobRef.KIND`, one per part):

  1. `journal.load(JobRef.KIND)`  the refs an earlier run saved for THIS job (the runner keys it by job);
  2. for each part of the request (n > 4 is several jobs) with a saved ref: poll it, submit nothing;
  3. for each part without one: submit, then `journal.save(ref.to_record())` BEFORE the first poll (durable
     when `save` returns);
  4. a job that ends failed, cancelled or timed out is dropped from the journal: a rerun submits it afresh.

A `JobRef` holds no secret (job id, status URL, part, variations, mode) and round-trips through JSON
(`to_dict` / `from_dict`, `to_record` / `from_record`). Without a journal, `edit()` uses a `MemoryJournal`:
nothing survives the process. `FileJournal(path)` is a durable one (a JSON file) for a single job run by hand.
The one window no journal closes: a crash after the submit was sent and before its answer arrived (Firefly has
no idempotency key). That outcome is unknown: the submit raises `OutcomeUnknown`, a possible charge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from backends.journal import CallJournal, FileJournal, JournalRecord, MemoryJournal

__all__ = ["FileJournal", "JobJournal", "JobRef", "MemoryJournal"]


@dataclass(frozen=True)
class JobRef:
    KIND = "firefly.job"  # its records in the shared journal

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

    def to_record(self) -> JournalRecord:
        return JournalRecord(self.KIND, key=str(self.part), data=self.to_dict())

    @classmethod
    def from_record(cls, record: JournalRecord) -> JobRef:
        return cls.from_dict(dict(record.data))


JobJournal = CallJournal  # Firefly's refs travel as `JobRef.to_record()` in the shared journal (`backends.journal`)
