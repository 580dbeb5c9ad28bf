"""Settings pieces every diffusion family shares (pydantic only, no torch): strict models, the device a policy
may name, the dtype and offload choices, and the default batch size per device."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Dtype = Literal["auto", "fp16", "bf16", "fp32"]  # auto: fp16 on cuda/mps, fp32 on cpu
Offload = Literal["none", "model", "sequential"]  # for cards under ~16 GB: "model" (12 GB ok), "sequential"


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a policy fails at start) and settings never change once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_device(value: str) -> str:
    """auto (cuda > mps > cpu) | cpu | mps | cuda | cuda:N; checked without torch (the policy loads anywhere)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("one of auto, cpu, mps, cuda, cuda:N")
    return value


def default_max_batch(device: str) -> int:
    """4 on CUDA, 1 elsewhere; without importing torch (`auto`: an NVIDIA driver present means CUDA)."""
    if device.startswith("cuda"):
        return 4
    if device == "auto" and sys.platform != "darwin" and Path("/proc/driver/nvidia/version").exists():
        return 4
    return 1
