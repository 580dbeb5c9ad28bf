"""`editroute batch status|cancel` outside a run: the batches an output folder's ledger knows, checked and cancelled
with the settings each batch was created with (kept in the ledger: no policy needed, and no secret: the settings
only say where the key lives).

Cancelling waits (up to `wait_s`) for the batch to stop, then collects it as a run would: its answers downloaded,
each line's state and what it was billed recorded; if no run is following it, the holds of answered lines become
their bills and those of lines that never ran are released. The next `editroute run` of the manifest writes the
answered jobs' outputs (already paid for) and sends the others again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import EditError
from backends.registry import create_backend
from pipeline.ledger import BatchRow, Ledger
from pipeline.run.batch_tracker import LANE_FOLDER, Tracker

log = logging.getLogger(__name__)


def lane_backend(row: BatchRow) -> Any:
    """The batch backend as it was when this batch was made."""
    return create_backend("openai-batch", row.backend, row.connection)


@dataclass
class _Lane:
    """What a tracker needs of a lane, for collecting a batch outside a run."""

    name: str
    backend: Any
    ledger: Ledger
    folder: Path
    stopping: bool = False

    @property
    def settings(self) -> Any:
        return self.backend.settings

    def wake(self, row_id: int, error: EditError | None = None) -> None:  # no job waits here
        pass


def refresh(ledger: Ledger) -> list[str]:
    """Ask the API for the status of every batch not yet collected and record it; problems as notes."""
    notes = []
    for row in ledger.batch_rows(uncollected=True):
        if not row.batch_id:
            notes.append(f"{row.backend}: a batch recorded at {row.created_at} was never confirmed created")
            continue
        try:
            info = lane_backend(row).retrieve(row.batch_id)
        except EditError as exc:
            notes.append(f"{row.batch_id}: {exc.message}")
            continue
        ledger.batch_progress(row.id, info.status, completed=info.completed, failed=info.failed)
    return notes


def cancel(
    ledger: Ledger,
    out_dir: str | Path,
    *,
    batch_id: str | None = None,
    wait_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Cancel the folder's running batches (or one), wait for each to stop, collect it; what happened, as lines."""
    rows = [r for r in ledger.batch_rows(uncollected=True) if r.batch_id and batch_id in (None, r.batch_id)]
    if batch_id is not None and not rows:
        known = [r.batch_id for r in ledger.batch_rows() if r.batch_id]
        return [f"{batch_id}: no running batch of this folder has that id (known: {', '.join(known) or 'none'})"]
    if not rows:
        return ["no running batch in this folder"]
    report = []
    for row in rows:
        backend = lane_backend(row)
        try:
            info = backend.cancel(row.batch_id)
        except EditError as exc:  # finished meanwhile (409), or the cancel failed: collect what is there
            log.warning("%s: %s", row.batch_id, exc.message)
            info = backend.retrieve(row.batch_id)
        until = time.monotonic() + wait_s
        delay = backend.settings.poll_interval
        while not info.final and time.monotonic() < until:
            sleep(min(delay, max(0.0, until - time.monotonic())))
            info = backend.retrieve(row.batch_id)
            delay = min(delay * 2, backend.settings.poll_max_interval)
        ledger.batch_progress(row.id, info.status, completed=info.completed, failed=info.failed)
        if not info.final:
            report.append(f"{row.batch_id}: {info.status}; still not stopped after {wait_s:g}s (run this again)")
            continue
        Tracker(_Lane(row.backend, backend, ledger, Path(out_dir) / LANE_FOLDER), row.id).collect(row, info)
        settled, released = ledger.settle_batch_lines(row.id)
        charged = ledger.batch_charged(row.id)
        report.append(
            f"{row.batch_id}: {info.status}; {info.completed} line(s) answered (billed ${charged}; the next "
            f"`editroute run` of the manifest writes them), {released} hold(s) of lines that never ran released"
            + (f", {settled} settled" if settled else "")
        )
    return report
