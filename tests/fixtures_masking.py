"""Tiny random-weight CLIPSeg and CLIP stand-ins for the masking and eval tests, built once per session.

Registered in tests/conftest.py through `pytest_plugins`. Each build goes to a fixed folder under the session's
base temp dir (skipped when already there).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_clipseg_dir(tmp_path_factory) -> Path:
    from backends.standins import build_tiny_clipseg

    return build_tiny_clipseg(tmp_path_factory.getbasetemp() / "tiny-clipseg")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from backends.standins import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.getbasetemp() / "tiny-clip")


def mask_alpha(png: bytes) -> np.ndarray:
    """The alpha channel of an inferred mask, which must be an RGBA PNG (alpha 0 = edit)."""
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGBA"
    return np.asarray(img.getchannel("A"))


def assert_background_edit_inverts_the_salient_object(image: Image.Image, settings) -> None:
    """'replace the background' edits exactly what scores below the median for the salient object."""
    from backends.masks import infer_mask, probabilities

    salient = probabilities(image, settings.salient_phrase, settings)
    threshold = float(np.median(salient))
    found = infer_mask(
        image,
        "replace the background with a white studio backdrop",
        settings.model_copy(update={"threshold": threshold}),
    )
    np.testing.assert_array_equal(mask_alpha(found.mask_png) == 0, salient < threshold)
    assert found.inverted and found.phrase == "background" and found.query == settings.salient_phrase
