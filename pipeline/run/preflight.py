"""Local checks that run before the first paid call: the output folder, disk space for the outputs, the ledger.

A paid call whose results cannot be written is money lost, so `editroute run`, `edit` and `serve` check
everything on this machine first and refuse with one line (a `ConfigError`, exit 2) instead of a traceback
after the spend.

The disk check uses a deliberately pessimistic bound per output image: uncompressed RGBA plus a quarter (a PNG
of noise, or a JPEG at quality 100, can exceed the raw size slightly), one extra image per job for a mask a
backend may add, and room for result.json and the ledger rows.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from backends.base import EditRequest
from pipeline.errors import ConfigError
from pipeline.jobs import Manifest
from pipeline.ledger import DB_NAME, Ledger

AUTO_MIN_SIDE = 2048  # `size: auto`: the input's size, but no less than 2048x2048 (hosted models pick their own)
PER_JOB_OVERHEAD = 64 * 1024  # result.json, ledger rows, file-system slack


def output_bytes_bound(request: EditRequest) -> int:
    """An upper bound on the bytes one request's outputs take on disk."""
    w, h = request.images[0].size if request.images else (1024, 1024)
    if "x" in request.size:
        w, h = (int(v) for v in request.size.split("x", 1))
    else:
        w, h = max(w, AUTO_MIN_SIDE), max(h, AUTO_MIN_SIDE)
    per_image = w * h * 4 * 5 // 4
    return (request.n + 1) * per_image + PER_JOB_OVERHEAD


def check_out_dir(out: str | Path, *, option: str = "--out") -> Path:
    """`out` is (or can be created as) a folder this process can write to; else a one-line `ConfigError`.
    Nothing is created: a refused command leaves no trace."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; choose a folder for the outputs")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise ConfigError(f"{option} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".editroute-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = "not writable" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else exc.strerror
        raise ConfigError(f"{option} {path}: cannot write files in {base} ({why})") from None
    return path


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk_space(out: Path, need: int, *, what: str, hint: str = "") -> None:
    """Refuse when the disk holding `out` has less free space than `need` bytes."""
    free = shutil.disk_usage(_existing_ancestor(out)).free
    if need > free:
        raise ConfigError(
            f"--out {out}: not enough disk space: {what} may write up to {_size(need)} (a worst-case bound), "
            f"{_size(free)} free on that disk{hint}"
        )


def check_existing_outputs(out: Path, names: Iterable[str], *, overwrite: bool) -> None:
    """`edit` never replaces earlier outputs silently: refuse unless `overwrite`."""
    if overwrite:
        return
    taken = [name for name in names if (out / name).exists()]
    if taken:
        raise ConfigError(
            f"--out {out}: already holds {', '.join(taken)} from an earlier edit; choose another --out, "
            "or pass --overwrite to replace them"
        )


def check_run_disk_space(out: Path, manifest: Manifest, ledger: Ledger, max_jobs: int | None) -> None:
    """Space for the outputs of the jobs this run may still execute (done jobs are skipped on a rerun)."""
    done = {rec.id for rec in ledger.jobs("done")} if ledger.counts().get("done") else set()
    need = jobs = 0
    for job in itertools.islice(manifest.jobs(), max_jobs):
        if job.id not in done:
            jobs += 1
            need += output_bytes_bound(job.request)
    hint = "; free some space, or run fewer jobs now with --max-jobs N (a rerun continues)"
    check_disk_space(out, need, what=f"{jobs} job(s)", hint=hint)


def open_ledger(out: Path) -> Ledger:
    """The run folder's ledger, or a one-line `ConfigError` saying why it cannot be opened."""
    try:
        return Ledger.in_dir(out)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(
            f"{out / DB_NAME}: cannot open the ledger ({exc}); is it an editroute ledger on a local disk?"
        ) from None


def open_existing_ledger(where: str | Path) -> Ledger:
    """The ledger of an earlier run (its --out folder, or the .db file itself), for the commands that only read
    or manage a run; a one-line `ConfigError` where there is none."""
    path = Path(where)
    db = path if path.is_file() else path / DB_NAME
    if not db.is_file():
        raise ConfigError(f"{where}: no ledger here (expected {db}); pass the --out folder of `editroute run`")
    return Ledger(db)


def _size(n: int) -> str:
    for exp, unit in ((9, "GB"), (6, "MB"), (3, "KB")):
        if n >= 10**exp:
            return f"{n / 10**exp:.1f} {unit}"
    return f"{n} bytes"
