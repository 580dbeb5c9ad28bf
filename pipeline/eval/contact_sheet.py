"""The eval's contact sheet: one row per job (input, mask, then each backend x tier output), labelled, for a
person to look at. Pillow only. Every row is `ROW_HEIGHT` pixels high, so the sheet is rows x ROW_HEIGHT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMB = 128
PAD = 4
LABEL_H = 24  # two lines of the default font
CELL_W = THUMB + 2 * PAD
ROW_HEIGHT = LABEL_H + THUMB + 2 * PAD
BG = (255, 255, 255)
EMPTY = (225, 225, 225)


@dataclass(frozen=True)
class Cell:
    label: str  # up to two lines ("\n")
    image: Image.Image | None  # None: a grey "n/a" cell


def mask_preview(mask: Image.Image) -> Image.Image:
    """OpenAI mask (alpha 0 = edit) as black/white: white = edited."""
    alpha = np.asarray(mask.convert("RGBA").getchannel("A"))
    return Image.fromarray((255 - alpha).astype(np.uint8), "L").convert("RGB")


def _fit(img: Image.Image) -> Image.Image:
    thumb = img.convert("RGB")
    thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    return thumb


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font) -> None:
    y = xy[1]
    for line in text.split("\n")[:2]:
        while line and draw.textlength(line, font=font) > CELL_W - 2:
            line = line[:-1]
        draw.text((xy[0], y), line, fill=(0, 0, 0), font=font)
        y += LABEL_H // 2


def render(rows: list[list[Cell]]) -> Image.Image:
    cols = max((len(r) for r in rows), default=1)
    sheet = Image.new("RGB", (max(1, cols) * CELL_W, max(1, len(rows)) * ROW_HEIGHT), BG)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, row in enumerate(rows):
        top = i * ROW_HEIGHT
        for j, cell in enumerate(row):
            left = j * CELL_W
            _text(draw, (left + PAD, top + 1), cell.label, font)
            box = (left + PAD, top + LABEL_H + PAD)
            if cell.image is None:
                draw.rectangle((*box, box[0] + THUMB - 1, box[1] + THUMB - 1), fill=EMPTY)
                draw.text((box[0] + THUMB // 2 - 8, box[1] + THUMB // 2 - 6), "n/a", fill=(90, 90, 90), font=font)
            else:
                thumb = _fit(cell.image)
                sheet.paste(thumb, (box[0] + (THUMB - thumb.width) // 2, box[1] + (THUMB - thumb.height) // 2))
        if i:
            draw.line((0, top, sheet.width, top), fill=(200, 200, 200))
    return sheet
