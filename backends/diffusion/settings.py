"""Settings pieces every diffusion family shares (pydantic only, no torch): strict models, the device a policy
may name, the dtype and offload choices, the default batch size per device, and the checks and tier lookup every
family's settings make (`DiffusionSettings`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Dtype = Literal["auto", "fp16", "bf16", "fp32"]  # auto: fp16 on cuda/mps, fp32 on cpu
Offload = Literal["none", "model", "sequential"]  # for cards under ~16 GB: "model" (12 GB ok), "sequential"
TIER_NAMES = ("low", "medium", "high")


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a policy fails at start) and settings never change once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_device(value: str) -> str:
    """auto (cuda > mps > cpu) | cpu | mps | cuda | cuda:N; checked without torch (the policy loads anywhere)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("one of auto, cpu, mps, cuda, cuda:N")
    return value


def merge_tiers(defaults: dict[str, BaseModel], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A policy's `tiers:` over the family's defaults: only the tiers and fields it gives change (a tier given
    empty, e.g. `low:` in YAML, keeps its defaults)."""
    unknown = [k for k in given if k not in TIER_NAMES]
    if unknown:
        raise ValueError(f"unknown tier(s) {unknown} (tiers: {', '.join(TIER_NAMES)})")
    merged = {name: tier.model_dump() for name, tier in defaults.items()}
    for name, tier in given.items():
        merged[name] = {**merged[name], **(tier.model_dump() if isinstance(tier, BaseModel) else dict(tier or {}))}
    return merged


def default_max_batch(device: str) -> int:
    """4 on CUDA, 1 elsewhere; without importing torch (`auto`: an NVIDIA driver present means CUDA)."""
    if device.startswith("cuda"):
        return 4
    if device == "auto" and sys.platform != "darwin" and Path("/proc/driver/nvidia/version").exists():
        return 4
    return 1


class DiffusionSettings(StrictModel):
    """The checks and lookups every family's settings share. It declares no fields: each family lists its own,
    in the order a user reads them (`editroute edit` names a kind's settings in that order)."""

    if TYPE_CHECKING:  # declared by every family
        device: str
        tiers: dict[str, Any]  # tier name -> the family's Tier (has use_lora)
        lora: Any
        auto_quality: str

    @field_validator("device", check_fields=False)
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _lora_configured(self) -> DiffusionSettings:
        using = [name for name, tier in self.tiers.items() if tier.use_lora]
        if using and self.lora is None:
            raise ValueError(f"tier(s) {using} set use_lora but no `lora` is configured")
        return self

    def tier(self, quality: str) -> tuple[str, Any]:
        """The tier a job's quality runs at, with its name (`auto`: the `auto_quality` setting)."""
        name = self.auto_quality if quality == "auto" else quality
        return name, self.tiers[name]
