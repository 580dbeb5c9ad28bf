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


@pytest.fixture(scope="session")
def tiny_flux2_klein_lora_dir(tmp_path_factory, tiny_flux2_klein_dir) -> Path:
    """A random rank-4 LoRA on the tiny klein transformer's attention, saved with `save_lora_weights` (the layout
    `load_lora_weights` reads for published few-step LoRAs)."""
    import torch
    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2_klein_dir)
    torch.manual_seed(0)
    pipe.transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights="gaussian")
    )
    layers = get_peft_model_state_dict(pipe.transformer)
    for name, weight in layers.items():
        if "lora_B" in name:  # peft starts B at zero (a no-op LoRA): make it change the output
            torch.nn.init.normal_(weight, std=0.5)
    out = tmp_path_factory.mktemp("tiny-klein-lora")
    Flux2KleinPipeline.save_lora_weights(out, transformer_lora_layers=layers)
    return out


def tiny_instruct_settings(model_dir: Path, *, guidance: float = 1.0, **overrides) -> dict:
    """Backend settings for fast CPU tests of qwen-edit / flux2-klein: 64x64 working size, 2 steps in every tier
    (Qwen needs >= 2), no CFG unless asked."""
    tier = {"steps": 2, "guidance_scale": guidance}
    settings = {
        "model": str(model_dir),
        "device": "cpu",
        "target_megapixels": 64 * 64 / 1024**2,
        "tiers": {"low": dict(tier), "medium": dict(tier), "high": dict(tier)},
    }
    for name, given in overrides.pop("tiers", {}).items():
        settings["tiers"][name] = {**settings["tiers"][name], **given}
    settings.update(overrides)
    return settings
