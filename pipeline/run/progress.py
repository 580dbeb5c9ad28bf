"""What a batch run shows while it works: a running tally, and a rich progress bar over it.

The runner calls `start(total)`, `started(job_id)`, `finished(outcome)` (from worker threads), `note(text)`,
and `close()`. `Tally` is the thread-safe count of this run; `NullProgress` shows nothing (tests, --json).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.ledger import fmt_usd
from pipeline.run.context import Outcome


@dataclass
class Tally:
    done: int = 0  # ran now and finished
    reused: int = 0  # already done before (result on disk): nothing called
    failed: int = 0
    skipped: int = 0  # failed before and not retried (use --retry-failed), or running elsewhere
    interrupted: int = 0
    running: int = 0
    spend: Decimal = Decimal(0)  # billed in this run
    started_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        with self._lock:
            self.running += 1

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self.running -= 1
            if outcome.status == "done" and outcome.reused:
                self.reused += 1
                return
            setattr(self, outcome.status, getattr(self, outcome.status) + 1)
            if outcome.attempts:
                self.spend += outcome.cost

    @property
    def finished(self) -> int:
        return self.done + self.reused + self.failed + self.skipped + self.interrupted

    def rate_per_min(self) -> float:
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        return self.done * 60.0 / elapsed

    def as_dict(self) -> dict[str, object]:
        return {
            "done": self.done,
            "reused": self.reused,
            "failed": self.failed,
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "spend_usd": str(self.spend),
            "seconds": round(time.monotonic() - self.started_at, 3),
        }


_JOB_NAMES = re.compile(r"job '[^']*'(, )?")


class NullProgress:
    def __init__(self) -> None:
        self.tally = Tally()

    def start(self, total: int | None) -> None:
        self.tally = Tally()

    def started(self, job_id: str) -> None:
        self.tally.start()

    def finished(self, outcome: Outcome) -> None:
        self.tally.add(outcome)

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NotesOnly(NullProgress):
    """No bar, but notes (manifest problems, stopping) still reach stderr: for --json runs."""

    def note(self, text: str) -> None:
        import sys

        print(text, file=sys.stderr, flush=True)


class RichProgress(NullProgress):
    """done / failed / running, spend so far and rate, on one live line (stderr, so --json stays clean)."""

    def __init__(self, console=None) -> None:
        super().__init__()
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None
        self._said: dict[str, str] = {}  # error text -> the first job it was printed for

    def start(self, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().start(total)
        self._progress = Progress(
            TextColumn("[bold]editroute run"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]done {task.fields[done]}[/] · [red]failed {task.fields[failed]}[/] · "
                "running {task.fields[running]} · {task.fields[spend]} · {task.fields[rate]}/min"
            ),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("run", total=total, **self._fields())
        self._progress.start()

    def _fields(self) -> dict[str, object]:
        t = self.tally
        return {
            "done": t.done + t.reused,
            "failed": t.failed,
            "running": t.running,
            "spend": fmt_usd(t.spend),
            "rate": f"{t.rate_per_min():.1f}",
        }

    def _update(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.tally.finished, **self._fields())

    def started(self, job_id: str) -> None:
        super().started(job_id)
        self._update()

    def finished(self, outcome: Outcome) -> None:
        super().finished(outcome)
        self._update()
        if outcome.status == "failed" and self._progress is not None:
            # a broken backend fails every job alike: its reason is printed once, then referred to
            error = _JOB_NAMES.sub("", str(outcome.error))
            first = self._said.setdefault(error, outcome.job_id)
            text = outcome.error if first == outcome.job_id else f"same error as {first}"
            self._progress.console.print(f"[red]failed[/] {outcome.job_id}: {text}", markup=True, highlight=False)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._update()
            self._progress.stop()
            self._progress = None
