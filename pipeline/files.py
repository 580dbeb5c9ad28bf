"""Crash-safe output files: temp name in the same folder, fsync, os.replace, fsync the folder.

The ledger may say "done" only after these return, so a crash leaves either no file or a whole one.
`write_files` writes a job's files together with ONE folder fsync (and one for the parent when the folder is
new) instead of one per file: the fsync is most of the pipeline's own per-job cost on a real disk.
Files get the mode `open()` would give a new file (0o666 less the umask), not mkstemp's private 0600, so another
user or a web server can read the images as the umask allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

_swapped_umask: list[int] = []  # where /proc is missing: read once by setting it (racy, so only once)


def _umask() -> int:
    """The process umask, read without changing it on Linux (/proc/self/status, so a later os.umask counts)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    if not _swapped_umask:
        mask = os.umask(0o022)
        os.umask(mask)
        _swapped_umask.append(mask)
    return _swapped_umask[0]


def new_file_mode() -> int:
    """0o666 less the umask: the mode `open(path, "w")` gives a new file."""
    return 0o666 & ~_umask()


def _mkstemp(folder: Path, name: str, mode: int) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600; os.replace keeps the mode
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write `data` to `path` atomically and durably; returns its sha256 hex digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent, path.name, new_file_mode())
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
    _fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def write_files(folder: str | Path, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """Write each (name, data) into `folder` atomically and durably, in order; returns their sha256 hex digests.

    Every file goes to a temp name and is fsynced first; then each is `os.replace`d in the given order (put the
    file that vouches for the others last, e.g. result.json); then the folder is fsynced once, and its parent too
    if the folder was just made. A crash at any point leaves each name absent, old or whole, never partial."""
    folder = Path(folder)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    digests = []
    mode = new_file_mode()
    try:
        for name, data in files:
            fd, tmp = _mkstemp(folder, name, mode)
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
    _fsync_dir(folder)
    if created:
        _fsync_dir(folder.parent)  # the new folder's own entry
    return digests


def _fsync_dir(folder: Path) -> None:
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
