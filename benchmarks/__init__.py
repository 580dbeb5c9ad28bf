"""Benchmark scripts, run from the repository root as `python -m benchmarks.<script>`: SDXL GPU speed
(`sdxl_speed`, `gpu_check`, on the full-size random-weight architecture in `sdxl_arch`) and routing speed
(`routing_speed`). They use the installed package; what `editroute bench` runs (cost model, pipeline overhead)
lives in `pipeline.bench`. Figures and how to reproduce them: `benchmarks/RESULTS.md`."""
