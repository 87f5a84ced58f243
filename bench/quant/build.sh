#!/bin/sh
# Builds the quantizer benches into build/bench/: selftest, quality, attention and host_speed with g++,
# gpu with nvcc (cudart linked statically, for sm_80 and sm_90a, or the -gencode flags in
# $NVCC_ARCH) where nvcc is found. ptxas's resource report (registers, spills) goes to build/bench/ptxas-*.txt.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build/bench"
mkdir -p "$out"
CXXFLAGS="-O3 -std=c++17 -mavx2 -mfma -mf16c -Wall -Wextra -I$root/kernels"
ref="$root/kernels/turboquant_ref.cpp"
g++ $CXXFLAGS -o "$out/selftest" "$root/bench/quant/selftest.cpp" "$ref"
g++ $CXXFLAGS -o "$out/quality" "$root/bench/quant/quality.cpp" "$ref"
g++ $CXXFLAGS -o "$out/attention" "$root/bench/quant/attention.cpp" "$ref"
g++ $CXXFLAGS -o "$out/host_speed" "$root/bench/quant/host_speed.cpp" "$ref" -lpthread
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ -x "$NVCC" ]; then
  arch=${NVCC_ARCH:-"-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a"}
  "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xptxas -v -c "$root/kernels/turboquant.cu" \
    -o "$out/turboquant_cu.o" 2> "$out/ptxas-turboquant.txt" || { cat "$out/ptxas-turboquant.txt" >&2; exit 1; }
  g++ $CXXFLAGS -c "$ref" -o "$out/turboquant_ref.o"
  "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xcompiler -mf16c -o "$out/gpu" "$root/bench/quant/gpu.cu" \
    "$out/turboquant_cu.o" "$out/turboquant_ref.o" -cudart static
else
  echo "build.sh: nvcc not found; skipped the GPU bench" >&2
fi
