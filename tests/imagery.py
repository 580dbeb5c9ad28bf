"""Small test images and masks, made in memory (OpenAI mask convention: alpha 0 = edit here)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def encode(img: Image.Image, fmt: str = "png", **save_kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()), **save_kwargs)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 64, mode: str = "RGB") -> Image.Image:
    """A picture with structure everywhere, so 'unchanged pixels' checks mean something."""
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1), ((x + y) * 7) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return img.convert(mode)


def image_bytes(width: int = 64, height: int = 64, fmt: str = "png") -> bytes:
    return encode(gradient(width, height, "RGB"), fmt)


def mask_image(width: int = 64, height: int = 64, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Opaque everywhere except `box` (left, top, right, bottom; exclusive), which is fully transparent.
    The default box is asymmetric (upper-left quadrant-ish) so an inverted mask is detectable."""
    box = box or (width // 8, height // 8, width // 2, height * 3 // 8)
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(0, 0, 0, 0))
    return mask


def mask_bytes(width: int = 64, height: int = 64, box: tuple[int, int, int, int] | None = None) -> bytes:
    return encode(mask_image(width, height, box), "png")
