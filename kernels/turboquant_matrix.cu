// Format 3's matrix kinds on the GPU: the kernels over a launch's blocks (the tile code is
// tq_matrix_tile.cuh), and the A fragments of a seed's matrix in device memory.
#include <vector>

#include "tq_cuda_params.h"
#include "tq_matrix_tile.cuh"

namespace tq_cuda {
namespace {

using tq_matrix::kCodeBytes;
using tq_matrix::kDim;
using tq_matrix::kTileVectors;

// Each warp takes items in turn: kTiles tiles of one group of one block. The CTA holds the
// matrix's A fragments (16 KiB) in shared memory; dequantize holds the centroids as byte tables
// in registers (four codes a lookup: on the H200 0.78 of a copy against 0.72 one load a code).
// Quantize is held to the registers that let 5 CTAs (20 warps) share an SM, which hide more
// of its codebook step's latency than 4 (on an H100, 0.65 of a copy against 0.68, two tiles a
// run); dequantize gains nothing from it (docs/QUANTIZATION.md).
constexpr int kQuantizeCtasPerSm = 5;
template <uint32_t DT, int kTiles, bool kQuantize>
__global__ void __launch_bounds__(kMatrixThreads, kQuantize ? kQuantizeCtasPerSm : 1) matrix_kernel_of(const __grid_constant__ MatrixArgs m) {
  __shared__ uint4 frags[tq_matrix::kFrags];
  for (uint32_t i = threadIdx.x; i < tq_matrix::kFrags; i += blockDim.x) frags[i] = m.frags[i];
  __syncthreads();
  const tq_matrix::CentroidTable<1> centroids(m.centroid);
  const Args& a = m.a;
  tq_matrix::DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32, step = gridDim.x * kMatrixWarps;
  constexpr uint32_t kRunVectors = kTiles * kTileVectors;
  // an item's blocks' slots, loaded an item ahead so that their latency is not the inputs'
  uint32_t item = blockIdx.x * kMatrixWarps + threadIdx.x / 32, raw_slot = 0, q_slot = 0;
  if (item < m.items) {
    const uint32_t first_block = m.items_per_block.div(item);
    raw_slot = a.raw_slots[first_block], q_slot = a.q_slots[first_block];
  }
  for (; item < m.items; item += step) {
    const uint32_t block = m.items_per_block.div(item), rest = item - block * m.items_per_block.d;
    const uint32_t g = m.runs_per_group.div(rest), run = rest - g * m.runs_per_group.d;
    const uint32_t raw_here = raw_slot, q_here = q_slot;
    if (item + step < m.items) {
      const uint32_t next_block = m.items_per_block.div(item + step);
      raw_slot = a.raw_slots[next_block], q_slot = a.q_slots[next_block];
    }
    // g = (2 layer + kv) kv_heads + head, split without the divisions tq_group_kind makes
    const uint32_t layer_kv = m.kv_heads.div(g), head = g - layer_kv * m.kv_heads.d, layer = layer_kv / 2, kv = layer_kv % 2;
    const tq_kind& k = *tq_kind_at(&a.p, &a.layout, layer, kv);
    if (!k.matrix) continue;  // the same for the whole warp
    uint8_t* q = a.q_base + q_here * a.q_stride;
    uint8_t* rec = q + tq_record_offset_at(&a.p, &a.layout, layer, kv, head);
    uint8_t* raw = const_cast<uint8_t*>(a.raw_base) + raw_here * a.raw_stride + g * a.group_raw_bytes +
                   (size_t)run * kRunVectors * kDim * a.dsize;
    uint8_t* codes = rec + k.codes_off + run * kRunVectors * kCodeBytes;
    float* norms = reinterpret_cast<float*>(rec + k.norms_off) + run * kRunVectors;
    if constexpr (kQuantize) {
      if (rest == m.header_item && lane < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(q)[lane] = a.header[lane];
      tq_matrix::quantize_tiles<DT, 1, tq_matrix::PolynomialCoder, kTiles>(warp, lane, raw, frags, codes, norms, m.book);
    } else {
      tq_matrix::dequantize_tiles<DT, 1, kTiles>(warp, lane, codes, norms, frags, raw, centroids);
    }
  }
}

template <uint32_t DT> const void* kernel_of(bool quant, uint32_t tiles) {
  if (tiles == 2) return quant ? (const void*)matrix_kernel_of<DT, 2, true> : (const void*)matrix_kernel_of<DT, 2, false>;
  return quant ? (const void*)matrix_kernel_of<DT, 1, true> : (const void*)matrix_kernel_of<DT, 1, false>;
}

}  // namespace

const void* matrix_kernel(uint32_t dtype, bool quant, uint32_t tiles) {
  switch (dtype) {
    case SW_DTYPE_FP32: return kernel_of<SW_DTYPE_FP32>(quant, tiles);
    case SW_DTYPE_FP16: return kernel_of<SW_DTYPE_FP16>(quant, tiles);
    default: return kernel_of<SW_DTYPE_BF16>(quant, tiles);
  }
}

cudaError_t matrix_fragments(uint64_t seed, bool inverse, const uint4** frags) {
  // M's fragments, then M^T's
  const auto words = [](uint64_t of) {
    const tq_matrix::Plan& plan = tq_matrix::plan_for(of);
    std::vector<uint32_t> both = tq_matrix::plan_fragments(plan, false);
    const std::vector<uint32_t> transposed = tq_matrix::plan_fragments(plan, true);
    both.insert(both.end(), transposed.begin(), transposed.end());
    return both;
  };
  const uint4* both = nullptr;
  const cudaError_t e = words_on_device(seed, words, &both);
  if (e == cudaSuccess) *frags = both + (inverse ? tq_matrix::kFrags : 0);
  return e;
}

}  // namespace tq_cuda
