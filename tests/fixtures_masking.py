"""Tiny random-weight CLIPSeg and CLIP stand-ins for the masking and eval tests, built once per session.

Registered in tests/conftest.py through `pytest_plugins`. Each build goes to a fixed folder under the session's
base temp dir (skipped when already there).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clipseg_dir(tmp_path_factory) -> Path:
    from backends.standins.tiny_clipseg import build_tiny_clipseg

    return build_tiny_clipseg(tmp_path_factory.getbasetemp() / "tiny-clipseg")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from backends.standins.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.getbasetemp() / "tiny-clip")
