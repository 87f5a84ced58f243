#!/bin/sh
# Compares this tree's C++ reference quantizer with the one at git revision REV (default
# HEAD), byte for byte, over random inputs: bench/quant/compare_ref.cpp says which. REV must
# share this tree's kernels/ headers (the format): both are built against them.
# Usage: bench/quant/compare-ref.sh [REV] [seed] [cases]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
rev=${1:-HEAD}
out="$root/build/bench"
mkdir -p "$out"
CXXFLAGS="-O3 -std=c++17 -mavx2 -mfma -mf16c -Wall -Wextra -I$root/kernels"
git -C "$root" show "$rev:kernels/turboquant_ref.cpp" > "$out/turboquant_ref_old.cpp"
rename=""
for f in check_params raw_bytes quantized_bytes groups header_version write_header check_header quantize_groups dequantize_groups; do
  rename="$rename -Dsw_tq_$f=old_sw_tq_$f"
done
g++ $CXXFLAGS $rename -c "$out/turboquant_ref_old.cpp" -o "$out/turboquant_ref_old.o"
g++ $CXXFLAGS -o "$out/compare_ref" "$root/bench/quant/compare_ref.cpp" "$root/kernels/turboquant_ref.cpp" "$out/turboquant_ref_old.o"
"$out/compare_ref" "${2:-1}" "${3:-1000}"
