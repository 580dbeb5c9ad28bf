"""Following one batch of a batch lane to its end: create it (or find it), poll it, collect its answers.

A tracker is a thread per batch (`Tracker(lane, row id).begin()`):

1. A batch recorded as 'creating' has no id yet: it was just recorded (create it), or a run died between
   recording it and recording the create call's answer, or that answer was lost. Then it is looked up by its
   metadata (`editroute_batch`: its local key) first, and created only if no batch carries it: never twice.
2. Poll with backoff (`poll_interval` doubling to `poll_max_interval`), recording status and counts; on
   `cancel()` (Ctrl-C) cancel it upstream once and keep polling until it is final.
3. Collect: download the output and error files into the batch's folder (streamed to a temp file, fsynced,
   renamed: durable before anything is read from them), index each line by offset, record every line's state in one
   transaction (completed; failed, with its error; expired or cancelled before it ran; a line in neither file of
   an expired or cancelled batch never ran either), then wake the jobs parked on it.

A tracker that cannot follow its batch (the key was revoked, the service is gone) wakes its jobs with the error:
they stop where they are and a rerun resumes them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends import errors as errs
from backends.errors import BackendMisconfigured, BackendUnavailable, EditError, InvalidRequest, OutcomeUnknown
from backends.openai import BatchLineCancelled, BatchLineExpired
from pipeline.ledger import BatchRow, LineUpdate
from pipeline.run.files import fsync_dir

if TYPE_CHECKING:
    from pipeline.run.batch_lane import BatchLane

log = logging.getLogger(__name__)

FIND_TRIES = 3  # looks at the list before concluding that a batch whose create answer was lost was never made
LOOK_BACK_S = 3600  # how far back before a batch's recording its listing is searched
LANE_FOLDER = ".batches"  # in the output folder: input files being filled, downloaded output and error files
OUTPUT, ERRORS = "output.jsonl", "errors.jsonl"  # a batch's answers, downloaded into its folder
_ERRORS = {
    c.__name__: c
    for c in (
        errs.InvalidRequest,
        errs.RateLimited,
        errs.BackendUnavailable,
        errs.BackendMisconfigured,
        errs.ContentRejected,
        BatchLineExpired,
        BatchLineCancelled,
    )
}


def encode_error(exc: EditError) -> str:
    return json.dumps({"error_class": type(exc).__name__, "message": exc.message})


def encode_line_error(result: Any) -> str:
    """A failed line's result (the backend's `LineResult`) as the ledger keeps it."""
    return json.dumps({"line": dataclasses.asdict(result)})


def stored_error(text: str | None, backend: Any) -> EditError:
    """A failed line's error as the ledger keeps it: the API's (mapped as for a synchronous call) or the lane's."""
    data = json.loads(text or "{}")
    if "error_class" in data:
        return _ERRORS.get(data["error_class"], BackendUnavailable)(str(data.get("message") or "batch failed"))
    if "line" in data:
        return backend.line_error(data["line"])
    return BackendUnavailable("the batch line failed (no error recorded)")


class Tracker(threading.Thread):
    def __init__(self, lane: BatchLane, row_id: int) -> None:
        super().__init__(name=f"batch-{lane.name}-{row_id}", daemon=True)
        self.lane, self.row_id = lane, row_id
        self.ledger, self.backend = lane.ledger, lane.backend
        self._create = False
        self._cancel = threading.Event()

    def begin(self, *, create: bool = False) -> Tracker:
        self._create = create
        self.start()
        return self

    def cancel(self) -> None:
        """Ctrl-C: cancel the batch upstream at the next turn of the loop (at once if it is waiting)."""
        self._cancel.set()

    def _sleep(self, seconds: float) -> bool:
        """Wait; True when woken early to cancel (once cancelling, every wait is a plain one)."""
        if self._cancel.is_set():
            threading.Event().wait(seconds)
            return False
        return self._cancel.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._cancel.is_set() or self.lane.stopping

    def run(self) -> None:
        try:
            self._follow()
        except EditError as exc:
            log.error("%s: cannot follow batch #%d: %s; a rerun resumes it", self.lane.name, self.row_id, exc)
            self.lane.wake(self.row_id, error=exc)
        except Exception as exc:  # a bug must not leave jobs parked for ever
            log.exception("%s: following batch #%d failed", self.lane.name, self.row_id)
            self.lane.wake(self.row_id, error=BackendUnavailable(f"following the batch failed: {exc}"))

    def _follow(self) -> None:
        row = self.ledger.batch_row(self.row_id)
        assert row is not None
        try:
            info = self._created(row)
        except _Settled:
            info = None
        if info is not None:
            info = self._poll(row, info)
            self.collect(row, info)
        self.lane.wake(self.row_id)

    # ---- 1. create, or find -----------------------------------------------------------------------------------

    def _metadata(self, row: BatchRow) -> dict[str, str]:
        return self.backend.metadata(self.ledger.batch_run_key(), row.local_key)

    def _created(self, row: BatchRow) -> Any | None:
        """The batch upstream (created now if it never was); None when it will not be made (its lines are
        recorded failed or cancelled)."""
        if row.batch_id:
            return self._retrieve(row.batch_id)
        metadata = self._metadata(row)
        info = self._try_create(row, metadata) if self._create else None
        tries = 0
        while info is None:
            info = self._find(row, metadata)
            if info is not None:
                log.info("%s: found batch %s by its metadata (its creation was not recorded)", self.lane.name, info.id)
                break
            tries += 1
            if tries < FIND_TRIES:
                self._sleep(self.lane.settings.poll_interval)
                continue
            if self.stopping:  # never made, and not to be made now: nothing ran, nothing billed
                self._settle_unsent(row, "cancelled")
                return None
            info = self._try_create(row, metadata)
            if info is None:
                tries = 0
        self.ledger.batch_created(row.id, info.id, info.status)
        return info

    def _try_create(self, row: BatchRow, metadata: dict[str, str]) -> Any | None:
        """Create it; None when the answer says nothing certain (lost, a server error): look it up then."""
        if self.stopping:
            return None
        try:
            return self.backend.create(row.input_file_id, metadata)
        except (InvalidRequest, BackendMisconfigured) as exc:  # certain: no batch was made; the jobs fall back
            if not isinstance(exc, BackendMisconfigured):  # the batch was refused, not each job's request
                exc = BackendUnavailable(f"the API refused to create the batch: {exc.message}")
            self._settle_unsent(row, "failed", exc)
            raise _Settled from None
        except (OutcomeUnknown, BackendUnavailable, errs.RateLimited) as exc:
            log.warning("%s: creating a batch: %s; looking it up before trying again", self.lane.name, exc)
            return None

    def _find(self, row: BatchRow, metadata: dict[str, str]) -> Any | None:
        try:
            return self.backend.find(metadata, created_after=row.created_at // 1000 - LOOK_BACK_S)
        except BackendMisconfigured:
            raise
        except BackendUnavailable as exc:
            log.warning("%s: listing batches: %s", self.lane.name, exc)
            return None

    def _settle_unsent(self, row: BatchRow, state: str, exc: EditError | None = None) -> None:
        lines = self.ledger.batch_lines(row.id)
        err = encode_error(exc) if exc is not None else None
        self.ledger.batch_progress(row.id, state, failed=len(lines), error=exc.message if exc else "never created")
        self.ledger.batch_collected(row.id, [LineUpdate(ln.custom_id, state, error=err) for ln in lines])

    # ---- 2. poll -----------------------------------------------------------------------------------------------

    def _retrieve(self, batch_id: str) -> Any:
        delay = self.lane.settings.poll_interval
        while True:
            try:
                return self.backend.retrieve(batch_id)
            except BackendMisconfigured:
                raise
            except BackendUnavailable as exc:  # the batch is still there: keep asking, less often
                log.warning("%s: batch %s: %s; asking again in %.0fs", self.lane.name, batch_id, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.lane.settings.poll_max_interval)

    def _poll(self, row: BatchRow, info: Any) -> Any:
        s = self.lane.settings
        delay = s.poll_interval
        cancelled = False
        while True:
            self.ledger.batch_progress(row.id, info.status, completed=info.completed, failed=info.failed)
            if info.final:
                return info
            if self.stopping and not cancelled:
                cancelled = True
                delay = s.poll_interval
                try:
                    info = self.backend.cancel(info.id)
                    log.warning("%s: cancelling batch %s (finished lines are still collected)", self.lane.name, info.id)
                    continue
                except EditError as exc:  # finished meanwhile (409), or the cancel failed: poll as before
                    log.warning("%s: cancelling batch %s: %s", self.lane.name, info.id, exc)
            if self._sleep(delay) and not cancelled:
                continue  # woken to cancel
            info = self._retrieve(info.id)
            delay = min(delay * 2, s.poll_max_interval)

    # ---- 3. collect --------------------------------------------------------------------------------------------

    def download(self, row: BatchRow, name: str, file_id: str | None) -> Path | None:
        """The file's content saved durably as `name` in the batch's folder (temp, fsync, rename)."""
        if not file_id:
            return None
        folder = Path(row.folder or Path(self.lane.folder) / row.local_key)
        folder.mkdir(parents=True, exist_ok=True)
        path, tmp = folder / name, folder / f".{name}.{uuid.uuid4().hex[:12]}.download"
        with open(tmp, "wb") as fh:
            self.backend.download(file_id, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
        log.debug("%s: %s saved in %s/", self.lane.name, file_id, LANE_FOLDER)
        return path

    def collect(self, row: BatchRow, info: Any) -> None:
        out_path = self.download(row, OUTPUT, info.output_file_id)
        err_path = self.download(row, ERRORS, info.error_file_id)
        waiting = {ln.custom_id for ln in self.ledger.batch_lines(row.id) if ln.state == "submitted"}
        updates: dict[str, LineUpdate] = {}
        for offset, raw in _lines(out_path):
            cid = self.backend.custom_id_of(raw)
            if cid in waiting:
                updates[cid] = LineUpdate(cid, "completed", offset, len(raw), cost=self.backend.line_cost(raw))
        for _, raw in _lines(err_path):
            result = self.backend.parse_line(raw)
            if result.custom_id in waiting and result.custom_id not in updates:
                state = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(
                    result.error_code or "", "failed"
                )
                updates[result.custom_id] = LineUpdate(result.custom_id, state, error=encode_line_error(result))
        missing = BackendUnavailable(
            f"batch {info.id} {info.status} without this line" + (f": {'; '.join(info.errors)}" if info.errors else "")
        )
        for cid in waiting - set(updates):  # in neither file: an expired or cancelled batch never ran it
            state = info.status if info.status in ("expired", "cancelled") else "failed"
            updates[cid] = LineUpdate(cid, state, error=encode_error(missing) if state == "failed" else None)
        self.ledger.batch_progress(
            row.id,
            info.status,
            completed=info.completed,
            failed=info.failed,
            output_file_id=info.output_file_id,
            error_file_id=info.error_file_id,
            error="; ".join(info.errors) or None,
        )
        self.ledger.batch_collected(row.id, list(updates.values()))
        done = sum(1 for u in updates.values() if u.state == "completed")
        log.info("%s: batch %s %s: %d of %d line(s) answered", self.lane.name, info.id, info.status, done, len(updates))


class _Settled(Exception):
    """The batch's lines are recorded failed: nothing more to follow."""


def _lines(path: Path | None):
    """(offset, line) of each line of a JSONL file, one at a time (a line may be megabytes)."""
    if path is None:
        return
    with open(path, "rb") as fh:
        offset = 0
        while raw := fh.readline():
            if raw.strip():
                yield offset, raw
            offset += len(raw)
