"""What `editroute bench` runs: the cost model over monthly volume (cost.py: API vs self-hosted per image and
per month, break-even; cost_output.py: Markdown, CSV and plots; gpu_figures.py: the SDXL speed it assumes, always
labelled; policy_mix.py: what each shipped policy costs on a synthetic production mix) and the pipeline's own
overhead per job (overhead.py).

The benchmark scripts that are not CLI commands (GPU speed, routing speed) and the published figures
(RESULTS.md) stay in `benchmarks/` at the repository root and use this package. Names load on first use, so
`python -m pipeline.bench.overhead` runs its module once; matplotlib loads only to plot."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cost": ("VOLUMES", "CostOptions", "CostReport", "Plan", "api_per_image", "break_even", "build_report", "headline"),
    "cost_output": ("usd", "write_all"),
    "gpu_figures": ("RESULTS_FILE", "SecondsFigure"),
    "policy_mix": ("PolicyMix", "build_policy_mix"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_MODULE_OF, "overhead_main"])


def __getattr__(name: str) -> Any:
    if name == "overhead_main":
        return importlib.import_module(f"{__name__}.overhead").main
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
