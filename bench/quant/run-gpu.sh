#!/bin/sh
# Runs the GPU quantizer bench built by build.sh (agreement, then speed), writing
# gpu.json and the printed tables under $OUT (default: build/bench/out).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/build/bench/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.total --format=csv > "$out/gpu-info.csv" 2>&1 || true
"$root/build/bench/gpu" "$out/gpu.json" | tee "$out/gpu.txt"
