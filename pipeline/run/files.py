"""Crash-safe output files: temp name in the same folder, fsync, os.replace, fsync the folder.

The ledger may say "done" only after these return, so a crash leaves either no file or a whole one.
`write_files` writes a job's files together with ONE folder fsync (and one for the parent when the folder is
new) instead of one per file: the fsync is most of the pipeline's own per-job cost on a real disk.
Files get the mode `open()` gives a new file (created 0o666, the kernel applies the umask), not mkstemp's private
0600, so another user or a web server can read the images as the umask allows.
A writer killed mid-way leaves only hidden temp files (`.<name>.<12 hex>.tmp`, never a listed output);
`remove_stale_temps` clears them when the next run takes the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

# O_EXCL: a new file or nothing; the 0o666 mode is narrowed by the umask in the kernel, as for open(path, "w")
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # what _create_temp makes, and nothing else


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new hidden temp file beside `folder/name`: (fd, path)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write `data` to `path` atomically and durably; returns its sha256 hex digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def write_files(folder: str | Path, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """Write each (name, data) into `folder` atomically and durably, in order; returns their sha256 hex digests.

    Every file goes to a temp name and is fsynced first; then each is `os.replace`d in the given order (put the
    file that vouches for the others last, e.g. result.json); then the folder is fsynced once, and its parent too
    if the folder was just made. A crash at any point leaves each name absent, old or whole, never partial."""
    folder = Path(folder)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[Path, Path]] = []
    digests = []
    try:
        for name, data in files:
            fd, tmp = _create_temp(folder, name)
            temps.append((tmp, folder / name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            digests.append(hashlib.sha256(data).hexdigest())
        while temps:
            tmp, final = temps[0]
            os.replace(tmp, final)
            temps.pop(0)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    fsync_dir(folder)
    if created:
        fsync_dir(folder.parent)  # the new folder's own entry
    return digests


def write_record(folder: str | Path, name: str, chunks: Sequence[bytes]) -> float:
    """Write `folder/name` so that it is safe from a killed process as early as possible, and then durable: the
    chunks go to a temp file that is renamed into place at once (from then on a kill -9 cannot lose it: the
    kernel holds it), then the file and the folder are fsynced (from then on neither can a power cut). Returns
    time.perf_counter() at the rename. A power cut between the two may leave the file torn or empty, so its
    reader must check it (a length and checksum in the content) and treat a torn one as absent."""
    folder = Path(folder)
    fd, tmp = _create_temp(folder, name)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.replace(tmp, folder / name)
            visible = time.perf_counter()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return visible


def remove_stale_temps(folder: str | Path) -> int:
    """Delete the temp files a killed writer left in `folder` (only names `_create_temp` makes); how many. Call it
    only while no live writer can be using the folder (the job is claimed by this run, or done)."""
    removed = 0
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and _TEMP_NAME.match(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(folder) / name)
            removed += 1
    return removed


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
