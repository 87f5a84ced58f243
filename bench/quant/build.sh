#!/bin/sh
# Builds the quantizer benches into build/bench/: selftest, quality, rotations, attention and host_speed with g++,
# gpu, mma_probe and halves_probe with nvcc (cudart linked statically, for sm_80 and sm_90a, or the -gencode flags in
# $NVCC_ARCH) where nvcc is found. ptxas's resource report (registers, spills) goes to build/bench/ptxas-*.txt.
#   sh bench/quant/build.sh [bench ...]     (default: all of them)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/build/bench"
mkdir -p "$out"
targets=" ${*:-selftest quality rotations attention host_speed gpu mma_probe halves_probe} "
wanted() { case "$targets" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
CXXFLAGS="-O3 -std=c++17 -mavx2 -mfma -mf16c -Wall -Wextra -I$root/kernels"
# the C++ reference: format 2's coding, format 3's matrix kinds and format 4's halves kinds
ref="$root/kernels/turboquant_ref.cpp $root/kernels/tq_matrix.cpp $root/kernels/tq_halves.cpp"
for bench in selftest quality rotations attention; do
  if wanted $bench; then g++ $CXXFLAGS -o "$out/$bench" "$root/bench/quant/$bench.cpp" $ref; fi
done
if wanted host_speed; then g++ $CXXFLAGS -o "$out/host_speed" "$root/bench/quant/host_speed.cpp" $ref -lpthread; fi
wanted gpu || wanted mma_probe || wanted halves_probe || exit 0
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "build.sh: nvcc not found; skipped the GPU benches" >&2
  exit 0
fi
arch=${NVCC_ARCH:-"-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a"}
g++ $CXXFLAGS -c "$root/kernels/turboquant_ref.cpp" -o "$out/turboquant_ref.o"
g++ $CXXFLAGS -c "$root/kernels/tq_matrix.cpp" -o "$out/tq_matrix.o"
g++ $CXXFLAGS -c "$root/kernels/tq_halves.cpp" -o "$out/tq_halves.o"
refobjs="$out/turboquant_ref.o $out/tq_matrix.o $out/tq_halves.o"
if wanted gpu; then
  # the launcher, the general kernels and the mse and prod families of the head_dim-128 ones
  objs=""
  for unit in launch general mse prod matrix halves; do
    "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xptxas -v -c "$root/kernels/turboquant_$unit.cu" \
      -o "$out/turboquant_$unit.o" 2> "$out/ptxas-turboquant_$unit.txt" || { cat "$out/ptxas-turboquant_$unit.txt" >&2; exit 1; }
    objs="$objs $out/turboquant_$unit.o"
  done
  "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xcompiler -mf16c -o "$out/gpu" "$root/bench/quant/gpu.cu" \
    $objs $refobjs -cudart static
fi
if wanted mma_probe; then
  # the tensor-core rotation probe (docs/QUANTIZATION.md): sm_80 and up have int8 mma.sync
  "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xptxas -v -Xcompiler -mf16c -o "$out/mma_probe" "$root/bench/quant/mma_probe.cu" \
    $refobjs -cudart static 2> "$out/ptxas-mma_probe.txt" || { cat "$out/ptxas-mma_probe.txt" >&2; exit 1; }
fi
if wanted halves_probe; then
  # format 4's halves kinds alone on the tensor cores, against their C++ reference (docs/QUANTIZATION.md)
  "$NVCC" -std=c++17 -O3 $arch -I"$root/kernels" -Xptxas -v -Xcompiler -mf16c -o "$out/halves_probe" "$root/bench/quant/halves_probe.cu" \
    $refobjs -cudart static 2> "$out/ptxas-halves_probe.txt" || { cat "$out/ptxas-halves_probe.txt" >&2; exit 1; }
fi
