"""Moments to kill `editroute run` at, installed inside the child process by the launcher in
`tests.crash_helpers` (test code only: nothing here is imported by editroute itself).

$EDITROUTE_TEST_HOOK = "<moment>:<job id>:<marker file>". When the named job reaches the moment, the child
creates the marker file and that job's thread stops there for good (the test then SIGKILLs the process):

  outputs_pending   the answer is back in the process, its output files not yet written
                    (`pipeline.run.execute.write_files` is about to run for the job)
  result_temp       the job's image files are written to temp names and `result.json`'s temp file was just
                    created (empty), nothing renamed yet: a writer killed mid-way
  before_done       `result.json` is on disk, the ledger not yet told the job is done (`Ledger.complete`)

Batch lane moments (the job id part is ignored; the first batch of the run stops there):
  batch_queued          jobs are in an input file, nothing recorded in the ledger yet (`Ledger.begin_batch`)
  batch_before_create   the batch and its lines are recorded, the create call not sent (`OpenAIBatchBackend.create`)
  batch_after_create    the batch was created upstream, its id not yet recorded (`Ledger.batch_created`)
  batch_collected       its answers are downloaded, the lines' states not yet recorded (`Ledger.batch_collected`)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOOK_ENV = "EDITROUTE_TEST_HOOK"


def _stop_here(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(3600)


def install() -> None:
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    moment, job_id, marker = spec.split(":", 2)
    if moment == "outputs_pending":
        import pipeline.run.execute as execute

        original = execute.write_files

        def write_files(folder, files):
            if Path(folder).name == job_id:
                _stop_here(marker)
            return original(folder, files)

        execute.write_files = write_files
    elif moment == "result_temp":
        import pipeline.run.files as files

        original_temp = files._create_temp

        def create_temp(folder, name):
            made = original_temp(folder, name)
            if Path(folder).name == job_id and name == "result.json":
                _stop_here(marker)
            return made

        files._create_temp = create_temp
    elif moment == "before_done":
        from pipeline.ledger.store import Ledger

        original_complete = Ledger.complete

        def complete(self, job, *args, **kwargs):
            if job == job_id:
                _stop_here(marker)
            return original_complete(self, job, *args, **kwargs)

        Ledger.complete = complete
    elif moment in _BATCH_MOMENTS:
        owner, method = _BATCH_MOMENTS[moment]

        def stop(self, *args, **kwargs):
            _stop_here(marker)

        setattr(owner(), method, stop)
    else:
        raise SystemExit(f"unknown {HOOK_ENV} moment {moment!r}")


def _ledger():
    from pipeline.ledger.store import Ledger

    return Ledger


def _batch_backend():
    from backends.openai.batch import OpenAIBatchBackend

    return OpenAIBatchBackend


_BATCH_MOMENTS = {
    "batch_queued": (_ledger, "begin_batch"),
    "batch_before_create": (_batch_backend, "create"),
    "batch_after_create": (_ledger, "batch_created"),
    "batch_collected": (_ledger, "batch_collected"),
}
