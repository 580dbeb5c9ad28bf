"""A batch lane: the jobs `editroute run` routes to a `kind: openai-batch` backend, gathered into OpenAI batches.

    lane = BatchLane("api-batch", backend, ledger, out_dir)     # the runner makes one per batch backend
    future = lane.submit(request, journal, deadline)            # from execute's `_run`, in the job's thread
    lane.flush()    # no more jobs will come: send what is queued
    lane.stop()     # Ctrl-C: drop what is queued, cancel the batches upstream (finished lines are still collected)

`submit` answers in one of two ways. For a job new to the lane it checks the request, uploads its local images
(once per content: the ledger remembers every upload), appends its JSONL line to the input file being filled
(`.batches/<local key>/input.jsonl` in the output folder) and returns a *parked* future: its result is the line's
final state, set when the batch is collected, hours later; the job's thread is freed meanwhile (`parking.py`).
For a job whose line the ledger knows (the same budget hold: the resumed job, or a rerun after a crash) it answers
from the ledger: the line's answer read from the downloaded output file (an `EditResult`, billed at Batch rates),
its error, a line that expired or was cancelled before it ran sent again in a new batch when the job's deadline
still allows a whole window (else `BatchLineExpired` / `BatchLineCancelled`: the policy's fallbacks take it), or,
for a line still in a running batch, a parked future on that batch.

The sender thread sends an input file when it holds `max_requests_per_batch` lines or would pass
`max_bytes_per_file`, when no job joined for `collect_s`, or at once when the runner says no more jobs come:
upload the file, record the batch and its lines in the ledger (durable, before the create call), create the batch
with `metadata` naming this output folder and the batch's local key, record its id. Each batch then has a tracker
(`batch_tracker.py`) that polls it, collects its answers and wakes its parked jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backends.base import EditRequest, EditResult
from backends.errors import BackendUnavailable, EditError, InvalidRequest
from backends.images import InputImage
from backends.openai import BatchLineCancelled, BatchLineExpired
from pipeline.deadlines import Deadline
from pipeline.ledger import BatchLine, BatchRow, Ledger, LineSpec, LineUpdate, from_nusd
from pipeline.run.batch_tracker import LANE_FOLDER, OUTPUT, Tracker, encode_error, stored_error

log = logging.getLogger(__name__)

INPUT = "input.jsonl"  # (LANE_FOLDER, OUTPUT, ERRORS: batch_tracker.py, which downloads the answers)
DRAIN_QUIET_S = 0.2  # once the runner has said no more jobs come: send after this long without a new line
STALE_SPOOL_S = 3600  # an input file no batch names, untouched this long: left by a killed run, removed


class LaneFuture(Future):
    """A job's place in a batch: resolves to its line's final state (completed, failed, expired, cancelled) when
    the batch is collected; the answer itself is read when the job resumes. Exception: the lane could not follow
    its batch (the job stays in it; a rerun resumes)."""

    parked = True


@dataclass
class _Entry:
    spec: LineSpec
    future: LaneFuture


@dataclass
class _Spool:
    """An input file being filled."""

    local_key: str
    path: Path
    entries: list[_Entry] = field(default_factory=list)
    size: int = 0


class BatchLane:
    def __init__(self, name: str, backend: Any, ledger: Ledger, out_dir: str | Path) -> None:
        self.name, self.backend, self.ledger = name, backend, ledger
        self.settings = backend.settings
        self.folder = Path(out_dir) / LANE_FOLDER
        self.window_ms = int(backend.window_s * 1000)
        self.calls: list[int] = []  # lines per batch this lane created (for tests and benchmarks)
        self._cond = threading.Condition()
        self._spool: _Spool | None = None
        self._ready: list[_Spool] = []
        self._last_line = 0.0
        self._flush_now = self._draining = self.stopping = self._closed = False
        self._waiting: dict[int, list[tuple[int, LaneFuture]]] = {}  # batch row -> (attempt id, future) parked on it
        self._trackers: dict[int, Tracker] = {}
        self._uploads: dict[str, Future[str]] = {}  # image sha256 -> its file id (being) uploaded in this process
        self._downloads: dict[int, threading.Lock] = {}  # batch row -> one download of its answers at a time
        self._sender = threading.Thread(target=self._send_loop, name=f"batch-{name}", daemon=True)
        self._sender.start()

    # ---- a job arrives -------------------------------------------------------------------------------------

    def submit(self, request: EditRequest, journal: Any, deadline: Deadline | None = None) -> Future[Any]:
        """The job's line (see the module doc). Never raises: problems come back in the future."""
        try:
            line = self.ledger.batch_line_for(journal.attempt_id)
            if line is not None:
                return self._known(request, journal, line)
            due = None if deadline is None else int(deadline.due().timestamp() * 1000)
            return self._queue(request, journal, due)
        except EditError as exc:
            return _failed(exc.with_context(job_id=request.job_id, backend=self.name))
        except OSError as exc:  # the input file or an answer on disk: the job takes the fallbacks
            return _failed(BackendUnavailable(f"batch lane files in {self.folder}: {exc}", backend=self.name))

    def _known(self, request: EditRequest, journal: Any, line: BatchLine) -> Future[Any]:
        row = self.ledger.batch_row(line.batch)
        assert row is not None
        if line.state == "submitted":
            return self._attach(row, line)
        if line.state == "completed":
            try:
                return _done(self._answer(request, row, line))
            except EditError as exc:
                return _failed(exc)
        if line.state == "failed":
            return _failed(stored_error(line.error, self.backend))
        # expired or cancelled before it ran (not billed): again, if the job can still wait a whole window
        left = None if line.deadline_at is None else line.deadline_at - int(time.time() * 1000)
        if not self.stopping and left is not None and left >= self.window_ms:
            log.info("%s: job %s's line %s before it ran; sending it again", self.name, line.job_id, line.state)
            return self._queue(request, journal, line.deadline_at)
        cls = BatchLineExpired if line.state == "expired" else BatchLineCancelled
        why = "its deadline leaves less than a whole window" if left is not None else "it has no deadline"
        return _failed(cls(f"batch {row.batch_id}: the line was {line.state} before it ran (not billed); {why}"))

    def _answer(self, request: EditRequest, row: BatchRow, line: BatchLine) -> EditResult:
        """The job's result from its answer in the downloaded output file (fetched again, once, if it is gone)."""
        raw = self._read_answer(row, line)
        if raw is None:
            with self._cond:  # one download for every job that finds the file gone
                lock = self._downloads.setdefault(row.id, threading.Lock())
            with lock:
                raw = self._read_answer(row, line)
                if raw is None:
                    Tracker(self, row.id).download(row, OUTPUT, row.output_file_id)
                    raw = self._read_answer(row, line)
        if raw is None:  # paid for, and unreadable: say what it was billed (the ledger counts it)
            err = BackendUnavailable(f"batch {row.batch_id}: the answer of line {line.custom_id!r} cannot be read")
            err.spent_usd = from_nusd(line.cost_nusd) if line.cost_nusd else None
            raise err
        result = self.backend.result_from_line(request, raw, row.batch_id or "")
        # its latency is the batch's turnaround (batch made -> answers out), not the microseconds of reading a line
        waited_s = max(0, (row.finished_at or int(time.time() * 1000)) - row.created_at) / 1000
        return replace(result, timings={**result.timings, "total_s": waited_s, "batch_turnaround_s": waited_s})

    def _read_answer(self, row: BatchRow, line: BatchLine) -> bytes | None:
        path = Path(row.folder or self.folder / row.local_key) / OUTPUT
        try:
            with open(path, "rb") as fh:
                fh.seek(line.out_offset or 0)
                raw = fh.read(line.out_length or 0)
        except OSError:
            return None
        if len(raw) != (line.out_length or 0) or self.backend.custom_id_of(raw) != line.custom_id:
            return None
        return raw

    def _queue(self, request: EditRequest, journal: Any, deadline_at: int | None) -> Future[Any]:
        self.backend.check(request)
        upload = self._upload if self.settings.image_upload == "files" else None
        raw = self.backend.request_line(journal.job_id, request, upload)
        if len(raw) > self.settings.max_bytes_per_file:
            raise InvalidRequest(
                f"as a batch line this job is {len(raw):,} bytes, above max_bytes_per_file "
                f"({self.settings.max_bytes_per_file:,}); use image_upload: files",
                field="image",
                limit=f"{self.settings.max_bytes_per_file} bytes per input file",
            )
        future = LaneFuture()
        with self._cond:
            if self.stopping or self._closed:
                raise BackendUnavailable("the batch lane is stopping: not queued")
            spool = self._spool_for(len(raw))
            with open(spool.path, "ab") as fh:
                fh.write(raw)
            spec = LineSpec(
                journal.job_id,
                journal.job_id,
                journal.key,
                journal.attempt_id,
                deadline_at,
                spool.size,
                len(raw),
            )
            spool.entries.append(_Entry(spec, future))
            spool.size += len(raw)
            self._last_line = time.monotonic()
            if len(spool.entries) >= self.settings.max_requests_per_batch:
                self._ready.append(spool)
                self._spool = None
            self._cond.notify_all()
        return future

    def _spool_for(self, size: int) -> _Spool:
        """The input file this line goes into (a full one is handed to the sender first). Holds the lock."""
        spool = self._spool
        if spool is not None and spool.size + size > self.settings.max_bytes_per_file:
            self._ready.append(spool)
            spool = None
        if spool is None:
            key = uuid.uuid4().hex
            folder = self.folder / key
            folder.mkdir(parents=True, exist_ok=True)
            spool = self._spool = _Spool(key, folder / INPUT)
        return spool

    def _upload(self, img: InputImage, field: str) -> str:
        """The file id of this image's content: uploaded once (in this run, or recorded from an earlier one and
        still on the provider's side)."""
        digest = self.backend.content_key(img)
        purpose = self.settings.image_file_purpose
        with self._cond:
            mine = digest not in self._uploads
            if mine:
                self._uploads[digest] = Future()
            pending = self._uploads[digest]
        if not mine:
            return pending.result()
        try:
            file_id = self.ledger.find_upload(self.name, digest, purpose)
            if file_id is not None and not self.backend.file_exists(file_id):
                self.ledger.forget_upload(file_id)
                file_id = None
            if file_id is None:
                data = img.read()
                file_id = str(self.backend.upload(data, img.name, purpose, img.mime)["id"])
                self.ledger.record_upload(self.name, digest, purpose, file_id, len(data), img.name)
        except BaseException as exc:
            pending.set_exception(exc)
            with self._cond:
                self._uploads.pop(digest, None)
            raise
        pending.set_result(file_id)
        return file_id

    def _attach(self, row: BatchRow, line: BatchLine) -> Future[Any]:
        """Wait for a batch that is running (or that a stopped run left): its tracker polls and collects it."""
        future = LaneFuture()
        with self._cond:
            self._waiting.setdefault(row.id, []).append((line.attempt_id, future))
            if row.id not in self._trackers:
                self._trackers[row.id] = Tracker(self, row.id).begin()
        return future

    # ---- sending --------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """No more jobs will come (the runner read the whole manifest): send what is queued now."""
        with self._cond:
            self._flush_now = self._draining = True
            self._cond.notify_all()

    def _take(self) -> _Spool | None:
        with self._cond:
            while True:
                if self._ready:
                    return self._ready.pop(0)
                spool = self._spool
                if spool is not None and spool.entries:
                    quiet = DRAIN_QUIET_S if self._draining else self.settings.collect_s
                    idle = time.monotonic() - self._last_line
                    if self._flush_now or self._closed or idle >= quiet:
                        self._spool, self._flush_now = None, False
                        return spool
                    self._cond.wait(quiet - idle)
                    continue
                self._flush_now = False
                if self._closed:
                    return None
                self._cond.wait()

    def _send_loop(self) -> None:
        while (spool := self._take()) is not None:
            try:
                self._send(spool)
            except Exception:  # a bug must not leave jobs parked for ever
                log.exception("%s: sending a batch failed", self.name)
                for e in spool.entries:
                    if not e.future.done():
                        e.future.set_exception(BackendUnavailable(f"{self.name}: sending the batch failed"))

    def _send(self, spool: _Spool) -> None:
        live = [e for e in spool.entries if not e.future.cancelled()]
        if self.stopping or not live:
            for e in spool.entries:
                e.future.cancel()
            _remove(spool.path.parent)
            return
        specs = [e.spec for e in spool.entries]
        connection = self.settings.model_dump(mode="json")
        try:
            with open(spool.path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
                uploaded = self.backend.upload(fh, f"editroute-{spool.local_key}.jsonl", "batch", "application/jsonl")
            input_id = str(uploaded["id"])
            self.ledger.record_upload(self.name, digest, "batch", input_id, spool.size, spool.path.name)
        except EditError as exc:  # nothing went out: the jobs take the policy's fallbacks
            row_id = self.ledger.begin_batch(self.name, spool.local_key, "", str(spool.path.parent), connection, specs)
            self._fail_batch(row_id, spool, exc)
            return
        row_id = self.ledger.begin_batch(
            self.name, spool.local_key, input_id, str(spool.path.parent), connection, specs
        )
        self.calls.append(len(specs))
        log.info("%s: batch of %d line(s) recorded; creating it", self.name, len(specs))
        with self._cond:
            self._waiting.setdefault(row_id, []).extend((e.spec.attempt_id, e.future) for e in spool.entries)
            self._trackers[row_id] = tracker = Tracker(self, row_id)
        tracker.begin(create=True)

    def _fail_batch(self, row_id: int, spool: _Spool, exc: EditError) -> None:
        err = encode_error(exc)
        self.ledger.batch_progress(row_id, "failed", failed=len(spool.entries), error=exc.message)
        self.ledger.batch_collected(row_id, [LineUpdate(e.spec.custom_id, "failed", error=err) for e in spool.entries])
        self.wake(row_id)

    # ---- waking parked jobs ----------------------------------------------------------------------------------

    def wake(self, row_id: int, error: EditError | None = None) -> None:
        """The batch is collected: each job parked on it learns its line's state (or why it cannot be followed)."""
        states = {ln.attempt_id: ln.state for ln in self.ledger.batch_lines(row_id)}
        with self._cond:
            waiting = self._waiting.pop(row_id, [])
            self._trackers.pop(row_id, None)
        for attempt_id, future in waiting:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(states.get(attempt_id, "failed"))

    # ---- stopping -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ctrl-C: queued lines are dropped (their jobs interrupted, nothing billed) and every running batch is
        cancelled upstream; its trackers still collect what finished (paid for) and wake the jobs."""
        with self._cond:
            if self.stopping:
                return
            self.stopping = True
            spools = [*self._ready, *([self._spool] if self._spool else [])]
            self._ready, self._spool = [], None
            trackers = list(self._trackers.values())
            self._cond.notify_all()
        for spool in spools:
            for e in spool.entries:
                e.future.cancel()
            _remove(spool.path.parent)
        for tracker in trackers:
            tracker.cancel()

    def close(self) -> None:
        """The run is over: stop the sender and remove the files of batches whose every line has been used."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            trackers = list(self._trackers.values())
        self._sender.join(timeout=30)
        for tracker in trackers:
            if tracker.ident is not None:  # (started)
                tracker.join(timeout=5)
        for row in self.ledger.batch_rows(backend=self.name):
            if row.collected_at is not None and row.cleaned_at is None and self.ledger.batch_done_with(row.id):
                _remove(Path(row.folder or self.folder / row.local_key))
                self.ledger.batch_cleaned(row.id)
        for folder in self.folder.glob("*") if self.folder.is_dir() else ():  # input files a killed run was filling
            stale = folder.is_dir() and time.time() - folder.stat().st_mtime > STALE_SPOOL_S
            if stale and not self.ledger.batch_key_known(folder.name):
                _remove(folder)


def open_lanes(backends: dict[str, Any], ledger: Ledger, out_dir: str | Path) -> dict[str, BatchLane]:
    """A lane for each batch backend (`batch_lane = True`), keyed by its policy name."""
    return {
        name: BatchLane(name, b, ledger, out_dir) for name, b in backends.items() if getattr(b, "batch_lane", False)
    }


def _done(value: Any) -> Future[Any]:
    f: Future[Any] = Future()
    f.set_result(value)
    return f


def _failed(exc: BaseException) -> Future[Any]:
    f: Future[Any] = Future()
    f.set_exception(exc)
    return f


def _remove(folder: Path) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        with contextlib.suppress(OSError):
            os.unlink(child)
    with contextlib.suppress(OSError):
        folder.rmdir()
