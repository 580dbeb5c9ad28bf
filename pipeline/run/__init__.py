"""Running jobs: each job executed exactly once (idempotency, ledger holds, retries, fallbacks), by an
executor (local threads; batching of jobs that share one GPU call), batch lanes (jobs that can wait, gathered into
OpenAI batches: batch_lane.py, batch_tracker.py, parking.py; batch_admin.py for `editroute batch`), with crash-safe
output files, call journals
(what a crash left paid for, so a rerun finishes instead of paying again), stored results for reruns, progress
and the end-of-run report; `preflight.py` checks everything local (output folder, disk space, ledger) before the
first paid call.

`run_batch` (runner.py) runs a manifest; `execute_job` (execute.py) runs one job, also for the server and the
eval, with an `ExecContext` and giving an `Outcome` (context.py); journal.py keeps each job's call journal.
Below it: the ledger, routing, `pipeline.jobs` and `backends`. The Ray executor lives in the cluster wing and is
named here only by string, in `EXECUTORS`."""

from pipeline.run.batch_admin import cancel as cancel_batches
from pipeline.run.batch_admin import refresh as refresh_batches
from pipeline.run.batch_lane import BatchLane, open_lanes
from pipeline.run.batch_report import batch_table
from pipeline.run.batching import BatchingPool, can_batch
from pipeline.run.context import ExecContext, Outcome, RetryPolicy
from pipeline.run.execute import execute_job
from pipeline.run.executors import DEFAULT_BATCH_LINGER_S, EXECUTORS, Executor, LocalExecutor, create_executor
from pipeline.run.files import atomic_write_bytes, remove_stale_temps, sha256_file, write_files
from pipeline.run.journal import AttemptJournal, JournalStore, Pending
from pipeline.run.preflight import (
    check_disk_space,
    check_existing_outputs,
    check_out_dir,
    open_existing_ledger,
    open_ledger,
    output_bytes_bound,
)
from pipeline.run.progress import NotesOnly, NullProgress, RichProgress, Tally
from pipeline.run.report import build_report, render, to_csv, to_json
from pipeline.run.results import RESULT_FILE, job_key, materialize
from pipeline.run.runner import RunResult, budget_caps, hosted_by, run_batch

__all__ = [
    "DEFAULT_BATCH_LINGER_S",
    "EXECUTORS",
    "RESULT_FILE",
    "AttemptJournal",
    "BatchLane",
    "BatchingPool",
    "ExecContext",
    "Executor",
    "JournalStore",
    "LocalExecutor",
    "NotesOnly",
    "NullProgress",
    "Outcome",
    "Pending",
    "RetryPolicy",
    "RichProgress",
    "RunResult",
    "Tally",
    "atomic_write_bytes",
    "batch_table",
    "build_report",
    "budget_caps",
    "check_disk_space",
    "check_existing_outputs",
    "check_out_dir",
    "can_batch",
    "cancel_batches",
    "create_executor",
    "execute_job",
    "hosted_by",
    "job_key",
    "materialize",
    "open_lanes",
    "open_existing_ledger",
    "open_ledger",
    "output_bytes_bound",
    "refresh_batches",
    "remove_stale_temps",
    "render",
    "run_batch",
    "sha256_file",
    "to_csv",
    "to_json",
    "write_files",
]
