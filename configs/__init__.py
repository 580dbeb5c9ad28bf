"""Shipped configuration: `prices.yaml` and `policies/*.yaml` (package data, so an installed editroute finds
them too)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
PRICES_FILE = CONFIG_DIR / "prices.yaml"
POLICIES_DIR = CONFIG_DIR / "policies"
GPU_SPEEDS_FILE = CONFIG_DIR / "gpu_speeds.yaml"  # per-GPU speed of each self-hosted model family, with sources
