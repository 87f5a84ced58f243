// What the tensor-core rotation probe (mma_probe.cu) runs beside format 3's tile code
// (kernels/tq_matrix_tile.cuh, whose arithmetic tq_matrix.h and that file describe): two more
// ways to find a code, by counting the codebook's 7 thresholds below |acc| or by a binary search
// over them (integer thresholds t_k = floor(beta_k * 128 nq), no conversion per value), and a
// second place to look centroids up, one shared-memory load a code. The probe runs the tile code
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
  __host__ __device__ int unclamped(int acc) const { return static_cast<int>((*this)(acc)); }  // within 0..15 already
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

// Where dequantize finds a code's centroid: kShared, the 16 integers in shared memory, one load
// a code (CentroidList); kRegisters, byte tables in registers, four codes a lookup (CentroidTable,
// the format's way).
enum class Lookup { kShared, kRegisters };

// The 16 codes' centroids as integers (centroid * 2^centroid_shift(kBytes), code order), one
// load a code from shared memory.
struct CentroidList {
  const int* centroid;
  // This lane's B fragments of a tile's codes (nib: coordinates 32c .. 32c + 31 of vector g, a nibble each).
  template <int kBytes> __host__ __device__ TileBytes bytes(const uint32_t (&nib)[4]) const {
    int value[32];
    for (int j = 0; j < 32; ++j) value[j] = centroid[(nib[j / 8] >> (4 * (j % 8))) & 0xF];
    return split_bytes<kBytes>(value);
  }
};

// What dequantize_tiles looks centroids up in, from the 16 codes' centroids as integers.
template <int kBytes, Lookup kLookup> __host__ __device__ inline auto centroid_source(const int* centroid) {
  if constexpr (kLookup == Lookup::kShared) return CentroidList{centroid};
  else return CentroidTable<kBytes>(centroid);
}

}  // namespace mma_probe
