"""Input images as the request carries them: probed once (format, size, alpha), read when needed.

An `InputImage` made from a path keeps only the path and its header facts (cheap: a manifest of 100,000
jobs is checked without decoding or holding their pixels). `materialized()` reads the bytes and decodes them
fully, so a truncated file fails as `InvalidRequest` when its job is about to run, before any spend; the
result can be sent to another process. `from_bytes` always decodes fully.

An image can also be a *remote reference* (`InputImage.remote`): an OpenAI Files id or an https URL that the
provider fetches itself. Its pixels are never seen here, so its size is 0x0 and every check that needs pixels
is skipped for it (validation says so); only backends whose capabilities take remote refs run such a job.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from backends.errors import InvalidRequest

# Pillow format name -> our name and the MIME type the OpenAI API wants on each multipart part.
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "MPO": "jpeg"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
REMOTE = "remote"  # the `format` of a remote reference: unknown until the provider fetches it
MAX_REF_CHARS = 2048  # a file id or URL longer than this is a mistake, not a reference


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
    file_id: str | None = None  # remote reference: an OpenAI Files id ("file-...")
    url: str | None = None  # remote reference: an https URL the provider downloads

    @cached_property
    def sha256(self) -> bytes:
        """sha256 digest of the bytes in memory, computed once (a job's key and its server's key both need it)."""
        return hashlib.sha256(self.read()).digest()

    @property
    def mime(self) -> str:
        return MIME_TYPES.get(self.format, "application/octet-stream")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def is_remote(self) -> bool:
        return self.file_id is not None or self.url is not None

    @property
    def ref(self) -> str:
        """What identifies a remote reference ("file_id:file-abc" or the URL); for hashing and messages."""
        return f"file_id:{self.file_id}" if self.file_id is not None else str(self.url)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.is_remote:
            raise InvalidRequest(
                f"{self.ref} is a remote reference: its bytes are fetched by the provider, not here",
                field="image",
                value=self.ref,
                limit="a backend that takes remote references",
            )
        assert self.path is not None
        return self.path.read_bytes()

    def materialized(self, field: str = "image") -> InputImage:
        """The same image with its bytes loaded and its pixels checked to decode (a remote ref: unchanged)."""
        if self.data is not None or self.is_remote:
            return self
        data = self.read()
        _probe(io.BytesIO(data), name=self.name, nbytes=len(data), data=data, path=self.path, field=field, decode=True)
        return replace(self, data=data, nbytes=len(data))

    def has_transparent_pixels(self) -> bool:
        """Whether some pixel has alpha 0 (decodes the image; a remote ref cannot tell and answers True)."""
        if self.is_remote:
            return True
        with self.open() as img:
            if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
                return False
            low, _ = img.convert("RGBA").getchannel("A").getextrema()
            return low == 0

    @classmethod
    def remote(cls, *, file_id: str | None = None, url: str | None = None, field: str = "image") -> InputImage:
        """A reference the provider resolves: exactly one of an OpenAI Files id or an https URL."""
        if (file_id is None) == (url is None):
            raise InvalidRequest(
                f"{field}: give exactly one of file_id or url", field=field, value=None, limit="file_id or url"
            )
        ref = file_id if file_id is not None else url
        if not isinstance(ref, str) or not ref.strip() or ref != ref.strip() or len(ref) > MAX_REF_CHARS:
            raise InvalidRequest(
                f"{field}: {ref!r} is not a usable reference",
                field=field,
                value=ref,
                limit=f"a non-empty string without spaces, at most {MAX_REF_CHARS} characters",
            )
        if url is not None and not url.lower().startswith("https://"):
            raise InvalidRequest(
                f"{field}: {url!r} is not an https URL",
                field=field,
                value=url,
                limit="an https:// URL the provider can download, or a file_id",
            )
        if file_id is not None and any(c.isspace() or c in "/?#" for c in file_id):
            raise InvalidRequest(
                f"{field}: {file_id!r} is not a file id", field=field, value=file_id, limit="an id like file-abc123"
            )
        return cls(name=ref, format=REMOTE, width=0, height=0, nbytes=0, has_alpha=True, file_id=file_id, url=url)

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
