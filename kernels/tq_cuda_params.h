// The plain parameters the CUDA quantizer's host launcher (turboquant_launch.cu) fills and its
// kernels read (turboquant_general.cu, turboquant_mse.cu, turboquant_prod.cu, turboquant_matrix.cu, turboquant_halves.cu), the constants
// both sides size things by, and the kernels' entry points as untyped pointers: the launcher
// never sees a CUDA template.
#ifndef SPILLWAY_TQ_CUDA_PARAMS_H
#define SPILLWAY_TQ_CUDA_PARAMS_H

#include <cuda_runtime.h>

#include <vector>

#include "tq_halves.h"
#include "tq_matrix.h"
#include "turboquant.h"
#include "turboquant_format.h"

namespace tq_cuda {

// ---- general kernels (turboquant_general.cu): any geometry ----------------------------------

constexpr int kThreads = 64;             // two warps: one group of 16 tokens x 128 dims fills them
constexpr uint32_t kStageBytes = 10240;  // staged rows per buffer

struct Args {
  sw_tq_params p;
  tq_layout layout;  // kinds by (outer layer, K or V), record offsets
  uint32_t header[SW_TQ_HEADER_BYTES / 4];
  uint32_t kv_heads, head_dim, tokens, groups, dtype, dsize;
  uint32_t chunk, row_bytes;  // rows per staged pass, staged bytes per row
  uint64_t group_raw_bytes;
  const uint8_t* raw_base;
  size_t raw_stride;
  const uint32_t* raw_slots;
  uint8_t* q_base;
  size_t q_stride;
  const uint32_t* q_slots;
  uint32_t n_blocks;
};

// Staged rows keep the raw bytes with 16 pad bytes after every 64, so the lanes of a team,
// which read 32 consecutive values each, start in different banks.
__host__ __device__ __forceinline__ uint32_t staged(uint32_t byte) { return byte + (byte >> 6) * 16u; }

// ---- head_dim-128 kernels (turboquant_mse.cu, turboquant_prod.cu) --------------------------

constexpr int kFastD = 128;                 // head_dim of the fast path
constexpr int kLaneD = 64;                  // values per lane
constexpr int kFastWarps = 4;               // warps per CTA
constexpr int kFastThreads = 32 * kFastWarps;
constexpr int kFastCtas = 4;                // CTAs per SM that registers are budgeted for
constexpr uint32_t kFastRow = kFastD * 2 + 16;   // staged row stride (bytes)
constexpr int kFastRounds = 3;              // rotation rounds of the format the fast path writes
// Words from one round's sign masks of a coordinate to the next round's (FastShared::rot).
constexpr int kRoundWords = 2 * (kLaneD + 4);

// Division by a divisor fixed at launch as a multiply-high and a shift (Granlund and
// Montgomery, in the form of CUTLASS's FastDivmod): exact for dividends below 2^31, and a
// few instructions where a division is a long subroutine.
struct FastDiv {
  uint32_t d, mul, shift;
  void set(uint32_t divisor) {
    uint32_t log2 = 0;
    while ((1ull << log2) < divisor) ++log2;
    d = divisor;
    mul = divisor == 1 ? 0u : (uint32_t)(((1ull << (31 + log2)) + divisor - 1) / divisor);
    shift = divisor == 1 ? 0u : log2 - 1;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return d == 1 ? n : __umulhi(n, mul) >> shift; }
};

// The codebook of a sub-vector as the fast kernels read it. A fractional rate codes its narrower
// half with the wider half's code (one code path for both): boundaries past its own are +inf,
// so the top magnitude bit stays 0 and is not stored, and centroids past its own are 0.
struct FastBook {
  float thr[7];   // positive boundaries, ascending
  float cent[8];  // nonnegative centroids by magnitude
  uint32_t sign;  // bit 31 where the sub-vector has an MSE code: the value's sign goes to its centroid
};

// A launch codes the blocks' groups of one rate in one range of layers of a class (the first
// outer layers, the inner ones, the last outer ones): both kinds when keys and values share it
// (their records are then alike), else one kind, and a second launch takes the other.
struct FastArgs {
  Args a;
  // per coordinate, in the launch's sub-vectors (one of 128 or two of 64 values):
  alignas(16) uint32_t rot[kFastRounds][kFastD];  // rotation signs of each round as bit-31 masks
  alignas(16) uint32_t qjl[kFastD];  // QJL signs as bit-31 masks
  alignas(16) float dq[kFastD];      // first round's sign times 1/gain: the dequantizer's last multiply
  FastBook book[2];                  // per sub-vector of the kind coded
  float cent[4][16];        // per kind and sub-vector: signed centroid by code (magnitude bits, then sign)
  uint32_t kv_first, kv_count;   // the kinds coded: kv_first, or both (kv_count 2)
  uint32_t groups_per_tile, tiles;  // tiles: of this launch, below 2^31
  FastDiv tiles_per_seg, tiles_per_block, tokens;  // a segment: the groups of one layer and kind
  tq_kind kind;                    // the kind coded (both kinds are alike when kv_count is 2)
  uint32_t padded;                 // whether records have padding bytes, which quantize zeroes
  uint32_t layer0;                 // the range's first layer
  // offsets within a block, below 2^32 on this path (fast_eligible)
  uint32_t range_off;              // of the range's first record
  uint32_t layer_q_bytes;          // quantized bytes of one layer of the range (both kinds)
  uint32_t values_off;             // of a layer's value records from its first key record
  uint32_t tile_bytes, warp_smem;  // staged rows of one tile; shared memory per warp
};

// Per-warp scratch after the row buffers (fractional rates only): energies, then the channel
// lists (u8, outliers ascending then the rest ascending) of every group of the tile.
__host__ __device__ __forceinline__ uint32_t fast_scratch_bytes(uint32_t groups_per_tile) {
  return kFastD * 4 + groups_per_tile * kFastD;
}

// ---- format 3's matrix kinds (turboquant_matrix.cu): head_dim 128, 4-bit MSE ----------------

constexpr int kMatrixWarps = 4;  // per CTA, sharing the matrix's A fragments in shared memory
constexpr int kMatrixThreads = 32 * kMatrixWarps;

// A launch codes the matrix kinds' groups of its blocks, a warp taking a run of kTiles tiles of
// 8 tokens of one group at a time (an item); the other groups' items are passed over.
struct MatrixArgs {
  Args a;
  const uint4* frags;  // A fragments of M (quantize) or M^T (dequantize), device memory
  tq_matrix::Codebook book;
  int centroid[16];
  uint32_t items;                           // of this launch: blocks x groups x runs, below 2^31
  FastDiv items_per_block, runs_per_group, kv_heads;
  uint32_t header_item;                     // the item of each block whose warp writes its header
};

// ---- format 4's halves kinds (turboquant_halves.cu): bf16 heads of 128, 3.5 and 2.5 bits -----

constexpr int kHalvesWarps = 4;  // per CTA, sharing M's fragments in shared memory

// A launch codes the halves kinds of one rate (the rest's bits: 2 or 3) in its blocks, a warp
// taking one group (16 tokens, one record) at a time; the other groups are passed over.
struct HalvesArgs {
  Args a;
  const uint4 *hi, *lo;      // A fragments of M's (quantize) or M^T's (dequantize) high and low bytes, device memory
  halves::Book books[2];     // quantize's: the outlier half's, the rest's
  uint32_t tables[2][4];     // dequantize's centroid bytes, the same halves
  int shifts[2];
  uint32_t items;            // of this launch: blocks x groups, below 2^31
  FastDiv items_per_block, kv_heads;
  uint32_t header_item;      // the item of each block whose warp writes its header
};

// ---- entry points -------------------------------------------------------------------------

// The general quantize or dequantize kernel: (Args) over kThreads threads, smem bytes of
// dynamic shared memory (rows staged; twice for quantize).
const void* general_kernel(bool quant);

// The head_dim-128 kernel of one rate, (FastArgs) over kFastThreads threads, or null where
// none is compiled: dtype bf16 or fp16; frac: a fractional rate, mse_bits the narrower
// half's MSE bits (the vector's at integer rates). mse: without QJL; prod: with.
const void* fast_kernel_mse(uint32_t dtype, bool quant, bool frac, uint32_t mse_bits);
const void* fast_kernel_prod(uint32_t dtype, bool quant, bool frac, uint32_t mse_bits);

// Words a seed's plan gives (make(seed): a matrix's A fragments), in device memory: made and
// copied on a device's first use of the seed, then kept for the process.
cudaError_t words_on_device(uint64_t seed, std::vector<uint32_t> (*make)(uint64_t), const uint4** words);

// The matrix kernel, (MatrixArgs) over kMatrixThreads threads, for any dtype; tiles: 1 or 2 a run.
const void* matrix_kernel(uint32_t dtype, bool quant, uint32_t tiles);
// The A fragments of the seed's M (or M^T) on the current device, made on first use and kept.
cudaError_t matrix_fragments(uint64_t seed, bool inverse, const uint4** frags);

// The halves kernel of a rate (the rest's bits: 2 or 3), (HalvesArgs) over 32 * kHalvesWarps threads.
const void* halves_kernel(bool quant, uint32_t bits);
// The A fragments of the seed's halves matrix M (or M^T), high and low bytes, on the current device.
cudaError_t halves_fragments(uint64_t seed, bool inverse, const uint4** hi, const uint4** lo);

}  // namespace tq_cuda

#endif
