// Rotations as dense matrices, for the benches that simulate candidates around the
// quantizer's codebooks (quality.cpp, rotations.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "codebooks.h"
#include "turboquant_format.h"

namespace bench {

using Matrix = std::vector<double>;  // dim x dim, row-major

// (H D_rounds ... H D_1) / dim^(rounds/2), with the quantizer's own sign diagonals.
inline Matrix hadamard_rotation(uint32_t dim, uint32_t sub, uint64_t seed, uint32_t rounds) {
  Matrix m(dim * dim, 0.0);
  for (uint32_t i = 0; i < dim; ++i) m[i * dim + i] = 1.0;
  const uint32_t purposes[] = {TQ_SIGNS_ROTATION, TQ_SIGNS_ROUND2, TQ_SIGNS_ROUND3};
  for (uint32_t r = 0; r < rounds; ++r) {
    Matrix next(dim * dim);
    for (uint32_t i = 0; i < dim; ++i)
      for (uint32_t j = 0; j < dim; ++j) {
        double acc = 0;
        for (uint32_t k = 0; k < dim; ++k) {
          const bool neg = (tq_sign_word(seed, dim, sub, purposes[r], k / 32) >> (k % 32)) & 1u;
          const double h = (__builtin_popcount(i & k) & 1 ? -1.0 : 1.0) * (neg ? -1.0 : 1.0);
          acc += h * m[k * dim + j];
        }
        next[i * dim + j] = acc / std::sqrt(static_cast<double>(dim));
      }
    m.swap(next);
  }
  return m;
}

// The centroid a rotated coordinate `y` (of a unit vector) codes to at `bits` bits.
inline double codebook_value(uint32_t dim, uint32_t bits, double y) {
  const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(dim) - 3][bits - 1];
  const float* bound = TQ_CODEBOOK_BOUNDARIES[tq_log2(dim) - 3][bits - 1];
  uint32_t cell = 0;
  while (cell + 1 < (1u << bits) && y > bound[cell]) ++cell;
  return cent[cell];
}

}  // namespace bench
