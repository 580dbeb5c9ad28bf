"""Session fixtures: the tiny random-weight Qwen-Image-Edit(-Plus) and FLUX.2 klein stand-in pipelines, built once
per test session (~2 s together on 2 cores, under 1 MB each).

Set EDITROUTE_TINY_QWEN_EDIT_DIR / EDITROUTE_TINY_FLUX2_KLEIN_DIR to reuse a build across sessions (rebuilt only
when missing or from another variant or recipe).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _target(tmp_path_factory, env: str, name: str) -> Path:
    given = os.environ.get(env)
    return Path(given) if given else tmp_path_factory.mktemp(name) / "pipeline"


@pytest.fixture(scope="session")
def tiny_qwen_edit_dir(tmp_path_factory) -> Path:
    """`QwenImageEditPlusPipeline` in the Qwen-Image-Edit-2511 layout (save_pretrained folder)."""
    from backends.standins.tiny_qwen_edit import build_tiny_qwen_edit

    return build_tiny_qwen_edit(_target(tmp_path_factory, "EDITROUTE_TINY_QWEN_EDIT_DIR", "tiny-qwen-edit"))


@pytest.fixture(scope="session")
def tiny_flux2_klein_dir(tmp_path_factory) -> Path:
    """Distilled `Flux2KleinPipeline` in the FLUX.2-klein-4B layout (save_pretrained folder)."""
    from backends.standins.tiny_flux2_klein import build_tiny_flux2_klein

    return build_tiny_flux2_klein(_target(tmp_path_factory, "EDITROUTE_TINY_FLUX2_KLEIN_DIR", "tiny-flux2-klein"))
