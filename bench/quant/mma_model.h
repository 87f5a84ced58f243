// The probe's C++ model (mma_probe.cu): the same arithmetic as the tile code, element by
// element, on the whole matrix; what the GPU and the emulated warp are checked against.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mma_tile.cuh"
#include "rotation_sim.h"

namespace mma_probe {

struct Model {
  // Both matrices in MMA order: forward[row][k] = 128 Q[contiguous_row(row)][contiguous_k(k)]
  // (rows coordinates, k channels); inverse[row][k] = 128 Q[contiguous_k(k)][contiguous_row(row)].
  std::vector<int> forward, inverse;
  int bytes;  // the operands' width, as the tile code's kBytes (2: 16-bit, 1: 8-bit)
  Codebook book;
  int centroid[16];

  Model(uint64_t seed, int operand_bytes) : forward(kDim * kDim), inverse(kDim * kDim), bytes(operand_bytes) {
    const bench::Matrix q = bench::hadamard_rotation(kDim, 0, seed, 2);
    for (uint32_t r = 0; r < kDim; ++r)
      for (uint32_t k = 0; k < kDim; ++k) {
        forward[r * kDim + k] = static_cast<int>(std::lround(q[contiguous_row(r) * kDim + contiguous_k(k)] * kDim));
        inverse[r * kDim + k] = static_cast<int>(std::lround(q[contiguous_k(k) * kDim + contiguous_row(r)] * kDim));
      }
    const float* bound = TQ_CODEBOOK_BOUNDARIES[tq_log2(kDim) - 3][3];
    const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(kDim) - 3][3];
    for (int k = 0; k < 7; ++k) book.boundary[k] = bound[8 + k];
    if (!fit_polynomial(book)) {
      std::fprintf(stderr, "mma_model: the codebook's polynomial does not code as its boundaries do\n");
      std::abort();
    }
    for (int code = 0; code < 16; ++code)  // offset binary: 8 + m for magnitude m of a value >= 0, 7 - m below
      centroid[code] = static_cast<int>(std::lround(std::ldexp(static_cast<double>(cent[code]), centroid_shift(bytes))));
  }

  int largest_entry() const {
    int top = 0;
    for (int v : forward) top = std::max(top, std::abs(v));
    return top;
  }

  // One vector's 64 code bytes and norm, its codes found the tile code's way.
  template <Coding kCoding = Coding::kCounting> void quantize(const uint16_t* raw, uint8_t* codes, float* norm) const {
    float x[kDim], top = 0.f;
    for (uint32_t i = 0; i < kDim; ++i) top = std::max(top, std::fabs(x[i] = tq_bf16_to_f32(raw[i])));
    const int e = top == 0.f ? -127 : std::ilogb(top) + 1;
    *norm = 0.f;
    if (e < kMinExponent) {  // subnormal tops included: q = 0, every code 8 (zero, in offset binary)
      std::fill(codes, codes + kCodeBytes, 0x88);
      return;
    }
    std::fill(codes, codes + kCodeBytes, 0);
    const float factor = bytes == 2 ? std::ldexp(1.f, 15 - e) : 127.f / top;
    int q[kDim];
    unsigned long long sum2 = 0;
    for (uint32_t k = 0; k < kDim; ++k) {
      q[k] = static_cast<int>(std::nearbyint(x[contiguous_k(k)] * factor));
      sum2 += static_cast<unsigned long long>(q[k] * q[k]);
    }
    const float nq = std::sqrt(static_cast<float>(sum2));
    *norm = bytes == 2 ? std::ldexp(nq, e - 15) : nq / factor;
    const CoderOf<kCoding> coder(book, nq);
    for (uint32_t r = 0; r < kDim; ++r) {
      int64_t acc = 0;
      for (uint32_t k = 0; k < kDim; ++k) acc += static_cast<int64_t>(forward[r * kDim + k]) * q[k];
      const uint32_t code = coder(static_cast<int>(acc));  // |acc| < 128 * 48 * 2^15 fits int32
      const uint32_t j = contiguous_row(r);
      codes[j / 2] |= static_cast<uint8_t>(code << (4 * (j % 2)));
    }
  }

  // One vector's 128 bf16 values from its codes and norm.
  void dequantize(const uint8_t* codes, float norm, uint16_t* raw) const {
    int value[kDim];
    for (uint32_t k = 0; k < kDim; ++k) {
      const uint32_t j = contiguous_k(k);
      value[k] = centroid[(codes[j / 2] >> (4 * (j % 2))) & 0xF];
    }
    const float scale = std::ldexp(norm, -7 - centroid_shift(bytes));
    for (uint32_t r = 0; r < kDim; ++r) {
      int64_t acc = 0;
      for (uint32_t k = 0; k < kDim; ++k) acc += static_cast<int64_t>(inverse[r * kDim + k]) * value[k];
      raw[contiguous_row(r)] = tq_f32_to_bf16(static_cast<float>(acc) * scale);
    }
  }

  // M's A fragments, given in MMA order (forward or inverse).
  static std::vector<uint32_t> a_fragments(const std::vector<int>& m) {
    return tq_matrix::a_fragments([&](uint32_t row, uint32_t k) { return m[row * kDim + k]; });
  }
};

}  // namespace mma_probe
