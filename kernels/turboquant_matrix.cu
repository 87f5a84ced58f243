// Format 3's matrix kinds on the GPU: the kernels over a launch's blocks (the tile code is
// tq_matrix_tile.cuh), and the A fragments of a seed's matrix in device memory.
#include <map>
#include <mutex>
#include <utility>

#include "tq_cuda_params.h"
#include "tq_device.cuh"
#include "tq_matrix_tile.cuh"

namespace tq_cuda {
namespace {

using tq_matrix::kCodeBytes;
using tq_matrix::kDim;
using tq_matrix::kTileVectors;

// Quantize stages each item's input in shared memory an item ahead (cp.async), so that a warp's
// loads run while it codes the item before: two runs a warp. A lane reads kLaneWords 16-byte words
// of one vector; word j of vector v is kept at v * kVectorWords + (j ^ s), s < kLaneWords from v's
// parity and j's lane, so that the 8 lanes of each quarter-warp phase of a 16-byte load (two
// vectors, four lanes each) meet 8 different bank groups.
template <uint32_t DT, int kTiles> struct Staging {
  static constexpr uint32_t kVectorWords = kDim * tq_matrix::Element<DT>::kBytes / 16;
  static constexpr uint32_t kLaneWords = kVectorWords / 4;
  static constexpr uint32_t kRunWords = kTiles * kTileVectors * kVectorWords;
  static constexpr size_t kWarpBytes = 2 * kRunWords * 16;

  __device__ static uint32_t at(uint32_t v, uint32_t j) {
    const uint32_t lane_of_j = j / kLaneWords, s = kLaneWords == 4 ? lane_of_j / 2 + 2 * (v % 2) : lane_of_j + 4 * (v % 2);
    return v * kVectorWords + (j ^ s);
  }
  __device__ static void copy(uint4* run, const uint4* src, uint32_t lane) {
    for (uint32_t u = lane; u < kRunWords; u += 32) cp_async16(run + at(u / kVectorWords, u % kVectorWords), src + u);
  }
  __device__ static void load(const uint4* run, uint32_t lane, tq_matrix::TileInput<DT> (&in)[kTiles]) {
    #pragma unroll
    for (int i = 0; i < kTiles; ++i)
      #pragma unroll
      for (uint32_t w = 0; w < kLaneWords; ++w) in[i].words[w] = run[at(i * kTileVectors + lane / 4, (lane % 4) * kLaneWords + w)];
  }
};

// Where an item is: its block's raw and quantized slots (loaded ahead by the caller), its group and
// the group's kind; raw and record null for an item of another kind's group.
struct ItemPlace {
  uint32_t block, rest, g, run;
  const uint8_t* raw;
  uint8_t* q;
  uint8_t* rec;
  const tq_kind* kind;
};
__device__ ItemPlace item_place(const MatrixArgs& m, uint32_t item, uint32_t raw_slot, uint32_t q_slot) {
  const Args& a = m.a;
  ItemPlace at;
  at.block = m.items_per_block.div(item), at.rest = item - at.block * m.items_per_block.d;
  at.g = m.runs_per_group.div(at.rest), at.run = at.rest - at.g * m.runs_per_group.d;
  at.kind = tq_group_kind(&a.p, &a.layout, at.g);
  at.q = a.q_base + q_slot * a.q_stride;
  at.rec = at.kind->matrix ? at.q + tq_record_offset(&a.p, &a.layout, at.g) : nullptr;
  at.raw = at.kind->matrix ? a.raw_base + raw_slot * a.raw_stride + at.g * a.group_raw_bytes : nullptr;
  return at;
}

// Each warp takes items in turn: kTiles tiles of one group of one block. The CTA holds the
// matrix's A fragments (16 KiB) in shared memory; dequantize holds the centroids as byte tables
// in registers (four codes a lookup: on the H200 0.78 of a copy against 0.72 one load a code).
// An item's blocks' slots are loaded an item ahead of its inputs, so that their latency is not
// the inputs'; quantize's inputs come an item ahead of their coding (Staging).
template <uint32_t DT, int kTiles, bool kQuantize>
__global__ void __launch_bounds__(kMatrixThreads) matrix_kernel_of(const __grid_constant__ MatrixArgs m) {
  __shared__ uint4 frags[tq_matrix::kFrags];
  extern __shared__ uint4 staged[];  // quantize: two runs a warp
  for (uint32_t i = threadIdx.x; i < tq_matrix::kFrags; i += blockDim.x) frags[i] = m.frags[i];
  __syncthreads();
  using Stage = Staging<DT, kTiles>;
  const tq_matrix::CentroidTable<1> centroids(m.centroid);
  const Args& a = m.a;
  tq_matrix::DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32, step = gridDim.x * kMatrixWarps;
  constexpr uint32_t kRunVectors = kTiles * kTileVectors;
  const size_t run_raw_bytes = (size_t)kRunVectors * kDim * a.dsize;
  uint4* runs = staged + (threadIdx.x / 32) * 2 * Stage::kRunWords;
  auto slots_of = [&](uint32_t item, uint32_t& raw_slot, uint32_t& q_slot) {
    if (item >= m.items) return;
    const uint32_t block = m.items_per_block.div(item);
    raw_slot = a.raw_slots[block], q_slot = a.q_slots[block];
  };
  uint32_t item = blockIdx.x * kMatrixWarps + threadIdx.x / 32, raw_slot = 0, q_slot = 0;
  slots_of(item, raw_slot, q_slot);
  // quantize: the first item's input staged, and the next item's slots loaded
  ItemPlace next = {};
  if (kQuantize && item < m.items) {
    next = item_place(m, item, raw_slot, q_slot);
    if (next.raw) Stage::copy(runs, reinterpret_cast<const uint4*>(next.raw + next.run * run_raw_bytes), lane);
    cp_async_commit();
    slots_of(item + step, raw_slot, q_slot);
  }
  for (uint32_t n = 0; item < m.items; item += step, ++n) {
    if constexpr (kQuantize) {
      const ItemPlace here = next;
      if (item + step < m.items) {
        next = item_place(m, item + step, raw_slot, q_slot);
        if (next.raw) Stage::copy(runs + ((n + 1) % 2) * Stage::kRunWords, reinterpret_cast<const uint4*>(next.raw + next.run * run_raw_bytes), lane);
        slots_of(item + 2 * step, raw_slot, q_slot);
      }
      cp_async_commit();  // perhaps empty: one group an item either way
      if (!here.raw) continue;  // the same for the whole warp
      cp_async_wait_prior();
      __syncwarp();
      const tq_kind& k = *here.kind;
      if (here.rest == m.header_item && lane < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(here.q)[lane] = a.header[lane];
      tq_matrix::TileInput<DT> in[kTiles];
      Stage::load(runs + (n % 2) * Stage::kRunWords, lane, in);
      __syncwarp();  // every lane has its input before the next item's copy may land on this run
      tq_matrix::quantize_inputs<DT, 1, tq_matrix::PolynomialCoder>(warp, lane, in, frags, here.rec + k.codes_off + here.run * kRunVectors * kCodeBytes,
                                                                    reinterpret_cast<float*>(here.rec + k.norms_off) + here.run * kRunVectors, m.book);
    } else {
      const ItemPlace here = item_place(m, item, raw_slot, q_slot);
      slots_of(item + step, raw_slot, q_slot);
      if (!here.raw) continue;  // the same for the whole warp
      const tq_kind& k = *here.kind;
      tq_matrix::dequantize_tiles<DT, 1, kTiles>(warp, lane, here.rec + k.codes_off + here.run * kRunVectors * kCodeBytes,
                                                 reinterpret_cast<const float*>(here.rec + k.norms_off) + here.run * kRunVectors, frags,
                                                 const_cast<uint8_t*>(here.raw) + here.run * run_raw_bytes, centroids);
    }
  }
}

template <uint32_t DT> size_t smem_of(bool quant, uint32_t tiles) {
  return quant ? kMatrixWarps * (tiles == 2 ? Staging<DT, 2>::kWarpBytes : Staging<DT, 1>::kWarpBytes) : 0;
}

template <uint32_t DT> const void* kernel_of(bool quant, uint32_t tiles) {
  if (tiles == 2) return quant ? (const void*)matrix_kernel_of<DT, 2, true> : (const void*)matrix_kernel_of<DT, 2, false>;
  return quant ? (const void*)matrix_kernel_of<DT, 1, true> : (const void*)matrix_kernel_of<DT, 1, false>;
}

}  // namespace

size_t matrix_kernel_smem(uint32_t dtype, bool quant, uint32_t tiles) {
  switch (dtype) {
    case SW_DTYPE_FP32: return smem_of<SW_DTYPE_FP32>(quant, tiles);
    case SW_DTYPE_FP16: return smem_of<SW_DTYPE_FP16>(quant, tiles);
    default: return smem_of<SW_DTYPE_BF16>(quant, tiles);
  }
}

const void* matrix_kernel(uint32_t dtype, bool quant, uint32_t tiles) {
  switch (dtype) {
    case SW_DTYPE_FP32: return kernel_of<SW_DTYPE_FP32>(quant, tiles);
    case SW_DTYPE_FP16: return kernel_of<SW_DTYPE_FP16>(quant, tiles);
    default: return kernel_of<SW_DTYPE_BF16>(quant, tiles);
  }
}

cudaError_t matrix_fragments(uint64_t seed, bool inverse, const uint4** frags) {
  static std::mutex mutex;
  static std::map<std::pair<int, uint64_t>, std::pair<uint4*, uint4*>> on_device;  // (device, seed): M's, M^T's
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = on_device.find({device, seed});
  if (found == on_device.end()) {
    const tq_matrix::Plan& plan = tq_matrix::plan_for(seed);
    const std::vector<uint32_t> forward = tq_matrix::plan_fragments(plan, false), transposed = tq_matrix::plan_fragments(plan, true);
    const size_t bytes = tq_matrix::kFrags * sizeof(uint4);
    uint4* both = nullptr;
    e = cudaMalloc(&both, 2 * bytes);
    if (e == cudaSuccess) e = cudaMemcpy(both, forward.data(), bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(both + tq_matrix::kFrags, transposed.data(), bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      cudaFree(both);
      return e;
    }
    found = on_device.emplace(std::make_pair(device, seed), std::make_pair(both, both + tq_matrix::kFrags)).first;
  }
  *frags = inverse ? found->second.second : found->second.first;
  return cudaSuccess;
}

}  // namespace tq_cuda
