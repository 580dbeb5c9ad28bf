"""Which speed an estimate uses for a self-hosted family on a named GPU, and says so.

In order: the backend's `seconds_per_step_mp` setting (configured); the seconds this process measured for the same
model, device and dtype (after a warm call); the per-GPU table in configs/gpu_speeds.yaml (published or derived
figures, each with its source) for the card the settings name (`gpu:`, else `gpu_cost: {gpu: ...}`). A backend
that names no card, or a card the table lacks, is estimated with the A100-80GB figure and the basis says so.
Pure Python: no torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from configs import GPU_SPEEDS_FILE

DEFAULT_CARD = "A100-80GB"
_EMA_WEIGHT = 0.3
_measured: dict[tuple, float] = {}  # (family, model, device, dtype) -> seconds per work unit, this process
_measured_lock = threading.Lock()


@dataclass(frozen=True)
class Speed:
    seconds: float  # per work unit (see configs/gpu_speeds.yaml)
    fixed_units: float  # per image, for text encoding and the VAE (transformer families)
    label: str  # for the estimate's basis: which figure, which card, what kind, where from


@lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    """configs/gpu_speeds.yaml's families, read once per process."""
    with open(GPU_SPEEDS_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["families"]


def card_of(settings: Any) -> str | None:
    """The GPU the settings name for speed: `gpu:`, else the `gpu_cost` list-price card."""
    return getattr(settings, "gpu", None) or getattr(settings.gpu_cost, "gpu", None)


def record(key: tuple, seconds: float, units: float) -> None:
    """A warm call's seconds per unit, smoothed (the first sample is taken as is)."""
    if units <= 0 or seconds <= 0:
        return
    per_unit = seconds / units
    with _measured_lock:
        old = _measured.get(key)
        _measured[key] = per_unit if old is None else (1 - _EMA_WEIGHT) * old + _EMA_WEIGHT * per_unit


def measured(key: tuple) -> float | None:
    with _measured_lock:
        return _measured.get(key)


def speed_for(family: str, settings: Any, key: tuple) -> Speed:
    """The figure an estimate uses (module doc), with a label that says which one it is."""
    table = load_table()[family]
    fixed = float(table.get("fixed_units", 0.0))
    configured = getattr(settings, "seconds_per_step_mp", None)
    if configured is not None:
        return Speed(configured, fixed, f"{configured:.4g} s (configured seconds_per_step_mp)")
    seen = measured(key)
    if seen is not None:
        return Speed(seen, fixed, f"{seen:.4g} s (measured in this process)")
    named = card_of(settings)
    card = named if named in table["cards"] else DEFAULT_CARD
    entry = table["cards"][card]
    why = "" if named == card else (f"; no {family} figure for {named}" if named else "; no card named: set `gpu:`")
    kind = "published" if entry["kind"] == "published" else "derived, DECLARED"
    label = f"{entry['seconds']:.4g} s on {card} ({kind}: {entry['source']}{why})"
    return Speed(float(entry["seconds"]), fixed, label)
