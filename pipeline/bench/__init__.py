"""What `editroute bench` runs: the cost model over monthly volume (cost.py: API vs self-hosted per image and
per month, break-even, the cost per accepted edit; cost_output.py: Markdown, CSV and plots; gpu_figures.py: the
SDXL speed it assumes, always labelled; policy_mix.py: what each shipped policy costs on a synthetic production
mix) and the pipeline's own overhead per job (overhead.py).

The benchmark scripts that are not CLI commands (GPU speed, routing speed) and the published figures
(RESULTS.md) stay in `benchmarks/` at the repository root and use this package. Names load on first use, so
`python -m pipeline.bench.overhead` runs its module once; matplotlib loads only to plot."""

from backends.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "cost": (
            "VOLUMES",
            "CostOptions",
            "CostReport",
            "PerAccepted",
            "Plan",
            "api_per_image",
            "break_even",
            "build_report",
            "cost_per_accepted",
            "headline",
        ),
        "cost_output": ("usd", "write_all"),
        "gpu_figures": ("RESULTS_FILE", "SecondsFigure"),
        "policy_mix": ("PolicyMix", "build_policy_mix"),
        "overhead": (("overhead_main", "main"),),
    },
)
