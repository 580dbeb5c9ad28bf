#!/usr/bin/env bash
# One-shot GPU run of the diffusion speed benchmarks on a machine with no internet (e.g. a lent H100/H200):
#   bash benchmarks/device_run.sh instruct [OUT_DIR]   # Qwen-Image-Edit-2511 + FLUX.2 klein 4B (~6-8 min on an H100)
#   bash benchmarks/device_run.sh sdxl [OUT_DIR]       # SDXL through sdxl_speed (~3-4 min; feeds `editroute bench cost`)
# OUT_DIR defaults to $OUT, else ./device-out. If diffusers/transformers are missing there, they are installed from
# wheels carried in ./wheels (made here with:
#   pip download diffusers==0.42.1 transformers==5.25.0 accelerate safetensors peft -d wheels --no-deps).
# Qwen runs 8 steps (true CFG 4, one 1024^2 input): per-step figures, so the 40-step tier is ~5x the pipeline column.
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:?usage: device_run.sh instruct|sdxl [OUT_DIR]}"
out="${2:-${OUT:-device-out}}"
mkdir -p "$out"
if ! python -c "import diffusers, transformers" 2>/dev/null; then
  python -m pip install -q --no-index --find-links wheels diffusers transformers accelerate safetensors peft
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
case "$part" in
  instruct)
    timeout 560 python -m benchmarks.diffusion_speed --families flux2-klein,qwen-edit --qwen-steps 8 \
      --rows plain,editroute,compile,attention,fp8,fbcache --warmup 1 --repeats 2 \
      --json "$out/diffusion_speed.json" | tee "$out/diffusion_speed.md" ;;
  sdxl)
    timeout 560 python -m benchmarks.sdxl_speed --compile --json "$out/sdxl_speed.json" | tee "$out/sdxl_speed.md" ;;
  *) echo "unknown part $part (instruct | sdxl)" >&2; exit 2 ;;
esac
