"""Input images as the request carries them: probed once (format, size, alpha), read when needed.

An `InputImage` made from a path keeps only the path and its header facts (cheap: a manifest of 100,000
jobs is checked without decoding or holding their pixels). `materialized()` reads the bytes and decodes them
fully, so a truncated file fails as `InvalidRequest` when its job is about to run, before any spend; the
result can be sent to another process. `from_bytes` always decodes fully.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from backends.errors import InvalidRequest

# Pillow format name -> our name and the MIME type the OpenAI API wants on each multipart part.
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "MPO": "jpeg"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class InputImage:
    name: str
    format: str  # png | jpeg | webp, or the lower-cased Pillow name of a format we do not accept
    width: int
    height: int
    nbytes: int
    has_alpha: bool
    frames: int = 1
    path: Path | None = None
    data: bytes | None = None

    @property
    def mime(self) -> str:
        return MIME_TYPES.get(self.format, "application/octet-stream")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def materialized(self, field: str = "image") -> InputImage:
        """The same image with its bytes loaded and its pixels checked to decode."""
        if self.data is not None:
            return self
        data = self.read()
        _probe(io.BytesIO(data), name=self.name, nbytes=len(data), data=data, path=self.path, field=field, decode=True)
        return replace(self, data=data, nbytes=len(data))

    def open(self) -> Image.Image:
        """Decode fully (Pillow); the caller owns the returned image."""
        img = Image.open(io.BytesIO(self.read()))
        img.load()
        return img

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "image", *, field: str = "image") -> InputImage:
        return _probe(io.BytesIO(data), name=name, nbytes=len(data), data=data, path=None, field=field, decode=True)

    @classmethod
    def from_path(cls, path: str | Path, *, field: str = "image") -> InputImage:
        path = Path(path)
        try:
            nbytes = path.stat().st_size
            with path.open("rb") as fh:
                return _probe(fh, name=path.name, nbytes=nbytes, data=None, path=path, field=field, decode=False)
        except FileNotFoundError:
            raise InvalidRequest(f"{field}: file not found: {path}", field=field, value=str(path)) from None
        except IsADirectoryError:
            raise InvalidRequest(
                f"{field}: {path} is a directory, not an image", field=field, value=str(path)
            ) from None


def _probe(
    fh, *, name: str, nbytes: int, data: bytes | None, path: Path | None, field: str, decode: bool
) -> InputImage:
    """Read the header (and, with `decode`, check the pixels decode) without keeping the decoded image."""
    try:
        with Image.open(fh) as img:
            fmt = _FORMATS.get(img.format or "", (img.format or "unknown").lower())
            frames = getattr(img, "n_frames", 1)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            width, height = img.size
            if decode:
                img.load()  # a truncated or corrupt file fails here, before any spend
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(
            f"{field}: {name} is not a decodable image ({exc.__class__.__name__}: {exc})",
            field=field,
            value=name,
            limit="a png, webp or jpeg file",
        ) from None
    return InputImage(
        name=name,
        format=fmt,
        width=width,
        height=height,
        nbytes=nbytes,
        has_alpha=has_alpha,
        frames=frames,
        path=path,
        data=data,
    )
