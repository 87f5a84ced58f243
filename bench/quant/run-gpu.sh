#!/bin/sh
# Runs the GPU quantizer bench built by build.sh (agreement, then speed: quantize and
# dequantize GB/s of every rate and variant as a share of a device-to-device copy in the same
# run), then the tensor-core rotation probe and the fractional rates' probe, writing gpu.json,
# mma_probe.json, halves_probe.json and the printed tables under $OUT (default: build/bench/out).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/build/bench/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.total --format=csv > "$out/gpu-info.csv" 2>&1 || true
# the bench exits 1 when the GPU and the reference disagree anywhere: pass that on
status=0
"$root/build/bench/gpu" "$out/gpu.json" > "$out/gpu.txt" || status=$?
cat "$out/gpu.txt"
# the tensor-core rotation probe: its own agreement (exit 1 on a difference) and speed
"$root/build/bench/mma_probe" "$out/mma_probe.json" > "$out/mma_probe.txt" || status=$?
cat "$out/mma_probe.txt"
# the fractional rates' probe: the same
"$root/build/bench/halves_probe" "$out/halves_probe.json" > "$out/halves_probe.txt" || status=$?
cat "$out/halves_probe.txt"
exit $status
