"""The SDXL backend's pixel helpers (pure Pillow/numpy): mask conversion, sizes, paste-back, encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backends import canvas as px
from tests.imagery import gradient, mask_image


def test_transparent_pixels_become_white_repaint_area():
    mask = mask_image(64, 64, box=(8, 8, 32, 24))
    repaint = np.asarray(px.repaint_mask(mask, (64, 64)))
    assert repaint[10, 10] == 255 and repaint[23, 31] == 255  # inside the transparent box (row, col)
    assert repaint[40, 40] == 0 and repaint[10, 40] == 0 and repaint[30, 10] == 0
    assert (repaint == 255).sum() == 24 * 16


def test_partly_transparent_pixels_are_kept():
    mask = Image.new("RGBA", (4, 1), (0, 0, 0, 255))
    mask.putpixel((0, 0), (0, 0, 0, 0))
    mask.putpixel((1, 0), (0, 0, 0, 1))
    assert list(np.asarray(px.repaint_mask(mask, (4, 1)))[0]) == [255, 0, 0, 0]


def test_no_mask_repaints_everything():
    assert np.asarray(px.repaint_mask(None, (5, 3))).min() == 255


@pytest.mark.parametrize(
    "size, expected", [("1024x1024", (1024, 1024)), ("1536x1024", (1536, 1024)), ("1024x1536", (1024, 1536))]
)
def test_fixed_sizes_are_the_output_and_work_near_one_megapixel(size, expected):
    geom = px.plan_geometry(size, 800, 600)
    assert geom.out_size == expected
    w, h = geom.work_size
    assert w % 8 == 0 and h % 8 == 0
    assert abs(w * h / 1024**2 - 1.0) < 0.03
    assert abs(w / h - expected[0] / expected[1]) < 0.02
    assert px.plan_geometry("1024x1024", 512, 512).work_size == (1024, 1024)


def test_auto_keeps_input_size_and_aspect():
    geom = px.plan_geometry("auto", 1200, 800)
    assert geom.out_size == (1200, 800) and not geom.padded
    w, h = geom.work_size
    assert w % 8 == 0 and h % 8 == 0 and abs(w / h - 1.5) < 0.02 and abs(w * h / 1024**2 - 1) < 0.03
    assert px.plan_geometry("auto", 64, 64, 64 * 64 / 1024**2).work_size == (64, 64)


def test_other_aspect_is_letterboxed_and_padding_repainted():
    geom = px.plan_geometry("1536x1024", 64, 64, 0.01)
    assert geom.content_box == (256, 0, 1280, 1024) and geom.padded
    canvas, mask = px.to_canvas(gradient(64, 64), Image.new("L", (64, 64), 0), geom)
    m = np.asarray(mask)
    assert canvas.size == (1536, 1024)
    assert m[:, :256].min() == 255 and m[:, 1280:].min() == 255  # bars get outpainted
    assert m[:, 256:1280].max() == 0  # the kept picture stays kept


def test_working_mask_never_loses_edit_pixels():
    geom = px.plan_geometry("auto", 100, 100, 50 * 50 / 1024**2)
    mask = Image.new("L", (100, 100), 0)
    mask.putpixel((51, 51), 255)  # one pixel to edit
    _, work = px.to_working(Image.new("RGB", (100, 100)), mask, geom)
    assert work.size == geom.work_size and np.asarray(work).max() == 255


def test_paste_back_keeps_every_pixel_outside_the_mask():
    original = gradient(64, 48)
    mask = px.repaint_mask(mask_image(64, 48, box=(10, 10, 40, 30)), (64, 48))
    generated = Image.new("RGB", (32, 24), (255, 0, 0))  # smaller working size: resized back up
    out = np.asarray(px.paste_back(original, generated, mask, feather_px=3)).astype(int)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(original).astype(int)[keep])
    assert (out[20, 25] == [255, 0, 0]).all()  # the mask's interior is the generated pixel
    edge = out[10, 25]  # on the mask's border: a blend, not a hard cut
    assert edge[0] < 255 or edge[1] > 0


def test_full_mask_returns_the_generated_image():
    gen = Image.new("RGB", (16, 16), (1, 2, 3))
    out = px.paste_back(gradient(16, 16), gen, Image.new("L", (16, 16), 255), feather_px=4)
    assert np.asarray(out).reshape(-1, 3).tolist() == [[1, 2, 3]] * 256


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_formats(fmt):
    data = px.encode(gradient(32, 32), fmt, None if fmt == "png" else 50)
    assert Image.open(io.BytesIO(data)).format == fmt.upper()


def test_compression_is_quality():
    img = gradient(64, 64)
    assert len(px.encode(img, "jpeg", 10)) < len(px.encode(img, "jpeg", 95))
    assert px.encode(img, "png") == px.encode(img, "png")  # deterministic
