"""Thumbnails for the review grid: made once, on first request, and kept beside the outputs.

`<job folder>/.thumbs/<role>-<key>.jpg`, where the key hashes the source file's path, size and mtime, so a job run
again with new outputs gets new thumbnails (and the browser, whose URLs carry the output's sha256, asks for them).
A mask is shown as people read it: white where the edit goes (OpenAI's convention is alpha 0 there).
Written to a temp name and renamed, so two requests racing for one thumbnail never see half a file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

THUMB_PX = 256  # longest side: sharp at the grid's 128 CSS px on a 2x screen
THUMB_DIR = ".thumbs"
VERSION = "1"
ROLES = ("input", "mask", "output")
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def mask_preview(mask: Image.Image) -> Image.Image:
    """White where the mask says edit (alpha 0), black where it keeps."""
    alpha = np.asarray(mask.convert("RGBA").getchannel("A"))
    return Image.fromarray((255 - alpha).astype(np.uint8), "L")


def _key(source: Path, role: str) -> str:
    st = source.stat()
    raw = f"{VERSION}|{role}|{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 4096:
            _locks.clear()
        return _locks.setdefault(path, threading.Lock())


def thumbnail(job_dir: Path, role: str, source: Path) -> Path:
    """The cached JPEG thumbnail of `source` (made now if missing). OSError / PIL errors: unreadable source."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}")
    target = job_dir / THUMB_DIR / f"{role}-{_key(source, role)}.jpg"
    if target.is_file():
        return target
    with _lock(target):
        if target.is_file():
            return target
        with Image.open(source) as img:
            img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG sources decode at a fraction of their size
            pic = ImageOps.exif_transpose(img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img)
            pic.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
            pic = mask_preview(pic) if role == "mask" else _flatten(pic)
        target.parent.mkdir(parents=True, exist_ok=True)
        for old in target.parent.glob(f"{role}-*.jpg"):  # a thumbnail of an earlier output of this job
            old.unlink(missing_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        pic.convert("RGB").save(tmp, format="JPEG", quality=82, optimize=True)
        os.replace(tmp, target)
    return target


def _flatten(img: Image.Image) -> Image.Image:
    """Transparency shown over a light checkerboard, as image editors do."""
    if img.mode != "RGBA":
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    w, h = rgba.size
    tile = 8
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((xx // tile + yy // tile) % 2)[..., None] == 0, 235, 200).astype(np.uint8)
    bg = Image.fromarray(np.repeat(board, 3, axis=2), "RGB")
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg
