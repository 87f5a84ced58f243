// What the tensor-core rotation probe (mma_probe.cu) runs beside format 3's tile code
// (kernels/tq_matrix_tile.cuh, whose arithmetic tq_matrix.h and that file describe): two more
// ways to find a code, by counting the codebook's 7 thresholds below |acc| or by a binary search
// over them (integer thresholds t_k = floor(beta_k * 128 nq), no conversion per value), and a
// second place to look centroids up, byte tables in registers. The probe runs the tile code
// on bf16 vectors with 16-bit operands too (two MMAs a product), which the format does not use.
#pragma once
#include <cstdint>

#include "tq_matrix_tile.cuh"

namespace mma_probe {

using namespace tq_matrix;

// How a coordinate's code is found: by counting the thresholds below it, by a binary search
// over them, or from the codebook's polynomial (the format's way).
enum class Coding { kCounting, kSearch, kPolynomial };

// One vector's coder by counting or binary search, against integer thresholds: the same codes
// as the polynomial's but right next to a boundary.
template <Coding kCoding> struct ThresholdCoder {
  int t[7];  // floor(beta_k * 128 nq): |acc| > t_k exactly when |acc| > beta_k * 128 nq
  ThresholdCoder() = default;
  __host__ __device__ ThresholdCoder(const Codebook& book, float nq) {
    for (int k = 0; k < 7; ++k) t[k] = static_cast<int>(floorf(book.boundary[k] * (128.f * nq)));
  }
  __host__ __device__ uint32_t operator()(int acc) const {
    const int mag = acc < 0 ? -acc : acc;
    return (static_cast<uint32_t>(acc >> 31) ^ (magnitude(mag) + 8u)) & 15u;  // 8 + m, or its complement 7 - m below zero
  }
  __host__ __device__ uint32_t magnitude(int mag) const {
    if (kCoding == Coding::kCounting) {
      uint32_t n = 0;
      for (int k = 0; k < 7; ++k) n += mag > t[k] ? 1u : 0u;
      return n;
    }
    const bool four = mag > t[3];
    const bool two = mag > (four ? t[5] : t[1]);
    const int last = four ? (two ? t[6] : t[4]) : (two ? t[2] : t[0]);
    return (four ? 4u : 0u) + (two ? 2u : 0u) + (mag > last ? 1u : 0u);
  }
};
template <Coding kCoding> using CoderOf = std::conditional_t<kCoding == Coding::kPolynomial, PolynomialCoder, ThresholdCoder<kCoding>>;

// Byte permute (prmt.b32 with selectors of 0-7): output byte i is byte (s >> 4i) & 7 of the
// eight bytes x (bytes 0-3) and y (bytes 4-7).
__host__ __device__ inline uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, s);
#else
  const uint64_t bytes = static_cast<uint64_t>(y) << 32 | x;
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) out |= static_cast<uint32_t>((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return out;
#endif
}

// Where dequantize finds a code's centroid: kShared, the 16 integers in shared memory, one load
// a code (the format's CentroidList); kRegisters, byte tables in registers, four codes a lookup.
enum class Lookup { kShared, kRegisters };

// The centroids as byte tables: [half][word] holds codes 8 half + 4 word .. + 3, a byte each
// (half 0 the values below zero, 1 the rest); hi their high bytes (8-bit: their only bytes), lo
// their low bytes. Fragment register f takes codes 4f .. 4f + 3, one 16-bit run of nibbles;
// each code's low 3 bits pick a byte of each half's table, and its top bit which of the two.
template <int kOperandBytes> struct CentroidTable {
  uint32_t hi[2][2], lo[2][2];
  __host__ __device__ explicit CentroidTable(const int* centroid) : hi{}, lo{} {
    for (int half = 0; half < 2; ++half)
      for (int m = 0; m < 8; ++m) {
        const int v = centroid[8 * half + m];
        hi[half][m / 4] |= static_cast<uint32_t>((kOperandBytes == 2 ? v >> 8 : v) & 0xFF) << (8 * (m % 4));
        if (kOperandBytes == 2) lo[half][m / 4] |= static_cast<uint32_t>(v & 0xFF) << (8 * (m % 4));
      }
  }
  __host__ __device__ static uint32_t lookup4(const uint32_t (&table)[2][2], uint32_t magnitudes, uint32_t pick) {
    return byte_perm(byte_perm(table[0][0], table[0][1], magnitudes), byte_perm(table[1][0], table[1][1], magnitudes), pick);
  }
  template <int kBytes> __host__ __device__ TileBytes bytes(const uint32_t (&nib)[4]) const {
    static_assert(kBytes == kOperandBytes, "a table is made for one operand width");
    TileBytes b;
    for (int f = 0; f < 8; ++f) {
      const uint32_t run = nib[f / 2] >> (16 * (f % 2));
      const uint32_t magnitudes = run & 0x7777u, pick = ((run >> 1) & 0x4444u) | 0x3210u;
      b.hi[f] = lookup4(hi, magnitudes, pick);
      b.lo[f] = kBytes == 2 ? lookup4(lo, magnitudes, pick) : 0;
    }
    return b;
  }
};

// What dequantize_tiles looks centroids up in, from the 16 codes' centroids as integers.
template <int kBytes, Lookup kLookup> __host__ __device__ inline auto centroid_source(const int* centroid) {
  if constexpr (kLookup == Lookup::kShared) return CentroidList{centroid};
  else return CentroidTable<kBytes>(centroid);
}

}  // namespace mma_probe
