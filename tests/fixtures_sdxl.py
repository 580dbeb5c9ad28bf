"""Session fixtures for the SDXL backend: the tiny random-weight stand-in pipeline, built once per test session.

Registered in tests/conftest.py through `pytest_plugins`. Set EDITROUTE_TINY_SDXL_DIR to reuse one build across
sessions (it is rebuilt only when missing or from another stand-in version).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    """A directory holding the tiny random-weight SDXL inpaint pipeline (save_pretrained layout)."""
    from backends.standins import build_tiny_sdxl

    given = os.environ.get("EDITROUTE_TINY_SDXL_DIR")
    target = Path(given) if given else tmp_path_factory.mktemp("tiny-sdxl") / "pipeline"
    return build_tiny_sdxl(target)


def tiny_settings(model_dir: Path, **overrides) -> dict:
    """Backend settings for fast CPU tests: 64x64-ish working size, 2 steps in every tier."""
    two_steps = {"steps": 2, "guidance_scale": 8.0, "strength": 0.99}
    settings = {
        "model": str(model_dir),
        "device": "cpu",
        "target_megapixels": 64 * 64 / 1024**2,
        "tiers": {"low": {**two_steps, "guidance_scale": 0.0}, "medium": two_steps, "high": two_steps},
    }
    for name, tier in overrides.pop("tiers", {}).items():
        settings["tiers"][name] = {**settings["tiers"][name], **tier}
    settings.update(overrides)
    return settings
