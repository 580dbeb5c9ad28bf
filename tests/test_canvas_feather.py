"""The paste-back's feathering: the separable erosion gives the same bytes as the PIL MinFilter chain it replaced,
and the size rule and the "nothing to edit" measure that every compositing backend shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from backends import canvas as px
from benchmarks.postprocess_speed import min_filter_erosion

REPO = Path(__file__).resolve().parents[1]


def _masks(rng: np.random.Generator):
    """Random speckle, random rectangles and ellipses, thin lines, all-on/all-off, odd and tiny shapes."""
    for shape in [(64, 64), (37, 91), (5, 3), (1, 1), (130, 70)]:
        yield (rng.random(shape) > 0.3).astype(np.uint8) * 255
        img = Image.new("L", shape[::-1], 0)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))
            x1, y1 = x0 + int(rng.integers(0, shape[1])), y0 + int(rng.integers(0, shape[0]))
            (draw.ellipse if rng.random() > 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=255)
        draw.line((0, 0, shape[1], shape[0]), fill=255, width=1)
        yield np.asarray(img)
    yield np.full((40, 50), 255, np.uint8)
    yield np.zeros((40, 50), np.uint8)


@pytest.mark.parametrize("radius", [1, 2, 3, 7, 8, 15, 16, 40])
def test_separable_erosion_gives_the_min_filter_chains_bytes(radius):
    for mask in _masks(np.random.default_rng(radius)):
        expected = min_filter_erosion(Image.fromarray(mask, "L"), radius)
        assert np.array_equal(px.erode(mask, radius), expected), (mask.shape, radius)


def test_feathered_paste_back_is_exact_outside_and_ramps_inside():
    canvas = Image.new("RGB", (96, 64), (10, 20, 30))
    generated = Image.new("RGB", (96, 64), (250, 240, 230))
    mask = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 10, 79, 53), fill=255)
    out = np.asarray(px.paste_back(canvas, generated, mask, feather_px=6)).astype(int)
    inside = np.asarray(mask) > 0
    assert (out[~inside] == (10, 20, 30)).all()
    assert (out[32, 50] == (250, 240, 230)).all()  # the centre is fully the generated image
    assert 10 < out[32, 21, 0] < 250  # a ramp at the mask's edge, not a hard seam


def test_paste_back_blends_exactly_as_the_full_frame_formula():
    rng = np.random.default_rng(5)
    for mask in _masks(rng):
        h, w = mask.shape
        canvas = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        generated = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        a = px.feather_alpha(Image.fromarray(mask, "L"), 3).astype(np.uint32)[..., None]
        expected = (np.asarray(canvas, np.uint32) * (255 - a) + np.asarray(generated, np.uint32) * a + 127) // 255
        out = px.paste_back(canvas, generated, Image.fromarray(mask, "L"), 3)
        assert np.array_equal(np.asarray(out), expected.astype(np.uint8))


def test_the_size_rule_auto_is_the_first_inputs_own_size():
    assert px.output_size("auto", (160, 128)) == (160, 128)
    assert px.output_size("1536x1024", (160, 128)) == (1536, 1024)
    geom = px.plan_geometry("auto", 160, 128, 1.0, grid=32)
    assert geom.out_size == (160, 128)
    assert all(v % 32 == 0 for v in geom.work_size) and abs(geom.work_size[0] / geom.work_size[1] - 1.25) < 0.05


def test_edit_area_says_when_a_mask_has_nothing_to_edit():
    assert px.edit_area(Image.new("L", (8, 8), 0)) == 0.0
    assert px.edit_area(Image.new("L", (8, 8), 255)) == 1.0
    half = Image.new("L", (8, 8), 0)
    half.paste(255, (0, 0, 4, 8))
    assert px.edit_area(half) == 0.5


def test_postprocess_benchmark_runs_and_reports_the_speed_up(tiny_flux2_klein_dir, capsys):
    """In-process: the --overlap part needs torch, whose import a subprocess would pay again."""
    import torch

    from benchmarks.postprocess_speed import main

    threads = torch.get_num_threads()
    assert (
        main(["--size", "256", "--repeats", "1", "--overlap", "--jobs", "2", "--model", str(tiny_flux2_klein_dir)]) == 0
    )
    out = capsys.readouterr().out
    assert "erosion speed-up:" in out and "| encode png |" in out
    assert "| 2 host worker(s) |" in out and "wall per job:" in out
    assert torch.get_num_threads() == threads  # the benchmark gives the threads back
