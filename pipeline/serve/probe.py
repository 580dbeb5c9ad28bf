"""An uploaded image checked from its header and structure, never decoded in full.

    img = probe_image(data, param="image[0]", name="photo.png", content_type="image/png", max_pixels=...)

What a proxy needs to know before it spends anything: the part's declared type is an image type OpenAI accepts,
the bytes are a PNG, JPEG or WebP, its size is within the pixel limit (checked from the header, before Pillow's
own decompression-bomb check would raise), and the file is whole: a PNG's chunks and their CRCs (Pillow's
`verify()`, which reads the file without inflating it), a JPEG's end-of-image marker, a WebP's RIFF length. The
pixels are decoded only where a self-hosted backend needs them (it decodes the image itself and refuses a broken
one as `InvalidRequest` naming the field), so an API-bound request costs ~1 ms here, not a full decode. Every
fault is a 400 naming the field, in OpenAI's words; no Pillow exception text (which may hold object addresses)
reaches the client.
"""

from __future__ import annotations

import io

from PIL import JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from backends.images import InputImage
from pipeline.serve.wire import ApiError

MIMES = ("image/png", "image/jpeg", "image/webp")
_ALSO = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_PLUGINS = (  # magic -> (our format name, the Pillow class that reads just the header)
    (b"\x89PNG\r\n\x1a\n", "png", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", "jpeg", JpegImagePlugin.JpegImageFile),
)
_SUPPORTED = "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."


def check_mimetype(content_type: str | None, param: str) -> None:
    """OpenAI's rule for a multipart file part: an image type it supports, stated on the part."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if not mime:
        raise ApiError(
            400,
            f"Invalid file '{param}': failed to determine mimetype. {_SUPPORTED}",
            param=param,
            code="missing_file_mimetype",
        )
    if _ALSO.get(mime, mime) not in MIMES:
        raise ApiError(
            400,
            f"Invalid file '{param}': unsupported mimetype ('{mime[:64]}'). {_SUPPORTED}",
            param=param,
            code="unsupported_file_mimetype",
        )


def invalid_image(param: str, why: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid image file or mode for '{param}': {why}. Please check your image file.",
        type="image_generation_user_error",
        param=param,
        code="invalid_image_file",
    )


def probe_image(data: bytes, *, param: str, name: str, max_pixels: int) -> InputImage:
    """The image's facts from its header, after checking it is whole; a 400 naming `param` otherwise."""
    fmt, plugin = _sniff(data)
    if plugin is None:
        raise invalid_image(param, "it is not a PNG, JPEG or WebP image")
    try:
        img = plugin(io.BytesIO(data))  # the plugin reads the header only; Pillow's bomb check is not run
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
        raise invalid_image(param, f"its {fmt.upper()} header cannot be read") from None
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise invalid_image(param, f"it says it is {width}x{height} pixels")
        if width * height > max_pixels:
            raise invalid_image(
                param, f"it is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}"
            )
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
        frames = getattr(img, "n_frames", 1) if fmt != "jpeg" else 1
        mode = img.mode
        _check_whole(img, fmt, data, param)
    finally:
        img.close()
    if mode in ("CMYK", "I;16", "I", "F"):
        raise invalid_image(param, f"its colour mode {mode} is not supported (use RGB or RGBA)")
    return InputImage(
        name=name,
        format=fmt,
        width=width,
        height=height,
        nbytes=len(data),
        has_alpha=has_alpha,
        frames=frames,
        data=data,
    )


def _sniff(data: bytes):
    for magic, fmt, plugin in _PLUGINS:
        if data.startswith(magic):
            return fmt, plugin
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", WebPImagePlugin.WebPImageFile
    return "", None


def _check_whole(img, fmt: str, data: bytes, param: str) -> None:
    """Truncated or corrupt files, found without decoding pixels."""
    if fmt == "png":
        try:
            img.verify()  # every chunk's CRC, through IEND
        except Exception:  # noqa: BLE001 - Pillow raises several types for a broken PNG; all mean the same
            raise invalid_image(param, "the PNG is truncated or corrupt") from None
    elif fmt == "jpeg":
        if b"\xff\xd9" not in data[-4096:]:  # the end-of-image marker (a camera may append a little after it)
            raise invalid_image(param, "the JPEG is truncated (no end-of-image marker)")
    elif fmt == "webp":
        if int.from_bytes(data[4:8], "little") + 8 > len(data):
            raise invalid_image(param, "the WebP is truncated (shorter than its RIFF header says)")
