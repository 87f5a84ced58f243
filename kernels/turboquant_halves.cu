// Format 4's halves kinds on the GPU: the kernels over a launch's blocks (the tile code is
// tq_halves_tile.cuh), and the A fragments of a seed's halves matrix in device memory.
#include <vector>

#include "tq_cuda_params.h"
#include "tq_halves_tile.cuh"

namespace tq_cuda {
namespace {

// Each warp takes one group (a record of 16 tokens) at a time; groups of other kinds, or of
// halves kinds of the other rate, are passed over. The CTA holds M's fragments in shared memory.
template <uint32_t kBits, bool kQuantize>
__global__ void __launch_bounds__(32 * kHalvesWarps, kQuantize ? halves::kQuantizeMinCtas<kBits> : 0)
    halves_kernel_of(const __grid_constant__ HalvesArgs h) {
  __shared__ halves::GroupShared<kBits, kHalvesWarps> sm;
  sm.load_fragments(h.hi, h.lo);
  const Args& a = h.a;
  halves::HalvesDeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32, w = threadIdx.x / 32, step = gridDim.x * kHalvesWarps;
  constexpr uint32_t kRecordWords = halves::GroupShared<kBits, kHalvesWarps>::kRecordWords;
  for (uint32_t item = blockIdx.x * kHalvesWarps + w; item < h.items; item += step) {
    const uint32_t block = h.items_per_block.div(item), g = item - block * h.items_per_block.d;
    // g = (2 layer + kv) kv_heads + head, split without the divisions tq_group_kind makes
    const uint32_t layer_kv = h.kv_heads.div(g), head = g - layer_kv * h.kv_heads.d, layer = layer_kv / 2, kv = layer_kv % 2;
    const tq_kind& k = *tq_kind_at(&a.p, &a.layout, layer, kv);
    if (!k.halves || k.sub[1].mse_bits != kBits) continue;  // the same for the whole warp
    uint8_t* q = a.q_base + a.q_slots[block] * a.q_stride;
    uint4* rec = reinterpret_cast<uint4*>(q + tq_record_offset_at(&a.p, &a.layout, layer, kv, head));
    uint4* raw = reinterpret_cast<uint4*>(const_cast<uint8_t*>(a.raw_base) + a.raw_slots[block] * a.raw_stride + g * a.group_raw_bytes);
    if constexpr (kQuantize) {
      if (g == h.header_item && lane < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(q)[lane] = a.header[lane];
      halves::stage_group(sm.group[w], raw, lane);
      halves::quantize_group_tiles<kBits>(warp, lane, reinterpret_cast<uint16_t*>(sm.group[w]), sm.hi, sm.lo, h.books[0], h.books[1],
                                          reinterpret_cast<uint8_t*>(sm.record[w]));
      __syncwarp();
      halves::copy_words(rec, sm.record[w], kRecordWords, lane);
    } else {
      halves::copy_words(sm.record[w], rec, kRecordWords, lane);
      halves::dequantize_group_tiles<kBits>(warp, lane, reinterpret_cast<const uint8_t*>(sm.record[w]),
                                            reinterpret_cast<uint32_t*>(sm.channels[w]), reinterpret_cast<uint32_t*>(sm.group[w]), sm.hi,
                                            sm.lo, h.tables, h.shifts, reinterpret_cast<uint16_t*>(raw));
      __syncwarp();
    }
  }
}

}  // namespace

const void* halves_kernel(bool quant, uint32_t bits) {
  if (bits == 3) return quant ? (const void*)halves_kernel_of<3, true> : (const void*)halves_kernel_of<3, false>;
  if (bits == 2) return quant ? (const void*)halves_kernel_of<2, true> : (const void*)halves_kernel_of<2, false>;
  return nullptr;
}

cudaError_t halves_fragments(uint64_t seed, bool inverse, const uint4** hi, const uint4** lo) {
  // M's high and low bytes' fragments, then M^T's; M depends on the seed alone (the rate picks
  // books and centroids), so any rate's plan gives it
  const auto words = [](uint64_t of) {
    const halves::Plan& plan = halves::plan_for(of, 3);
    std::vector<uint32_t> all;
    for (int i = 0; i < 4; ++i) {
      const std::vector<uint32_t> f = halves::a_fragments(plan, i % 2 == 0, i >= 2);
      all.insert(all.end(), f.begin(), f.end());
    }
    return all;
  };
  const uint4* all = nullptr;
  const cudaError_t e = words_on_device(seed, words, &all);
  if (e != cudaSuccess) return e;
  const uint4* base = all + (inverse ? 2 : 0) * halves::kFrags;
  *hi = base, *lo = base + halves::kFrags;
  return cudaSuccess;
}

}  // namespace tq_cuda
