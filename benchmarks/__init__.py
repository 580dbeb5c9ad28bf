"""Benchmarks: the cost model over volume (`cost`), pipeline overhead (`pipeline_overhead`) and SDXL GPU speed
(`sdxl_speed`). Figures and how to reproduce them live in `benchmarks/RESULTS.md`."""
