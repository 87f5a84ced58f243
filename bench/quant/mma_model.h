// The probe's C++ model (mma_probe.cu): the same arithmetic as the tile code, element by
// element, on the whole matrix; what the GPU and the emulated warp are checked against.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
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
  float boundary[7];
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
    for (int k = 0; k < 7; ++k) boundary[k] = bound[8 + k];
    for (int code = 0; code < 16; ++code)
      centroid[code] = static_cast<int>(std::lround(std::ldexp(static_cast<double>(cent[8 + code % 8]), centroid_shift(bytes)))) *
                       (code < 8 ? 1 : -1);
  }

  int largest_entry() const {
    int top = 0;
    for (int v : forward) top = std::max(top, std::abs(v));
    return top;
  }

  // One vector's 64 code bytes and norm.
  void quantize(const uint16_t* raw, uint8_t* codes, float* norm) const {
    float x[kDim], top = 0.f;
    for (uint32_t i = 0; i < kDim; ++i) top = std::max(top, std::fabs(x[i] = tq_bf16_to_f32(raw[i])));
    const int e = top == 0.f ? -127 : std::ilogb(top) + 1;
    std::fill(codes, codes + kCodeBytes, 0);
    *norm = 0.f;
    if (e < kMinExponent) return;  // subnormal tops included
    const float factor = bytes == 2 ? std::ldexp(1.f, 15 - e) : 127.f / top;
    int q[kDim];
    unsigned long long sum2 = 0;
    for (uint32_t k = 0; k < kDim; ++k) {
      q[k] = static_cast<int>(std::nearbyint(x[contiguous_k(k)] * factor));
      sum2 += static_cast<unsigned long long>(q[k] * q[k]);
    }
    const float nq = std::sqrt(static_cast<float>(sum2));
    *norm = bytes == 2 ? std::ldexp(nq, e - 15) : nq / factor;
    for (uint32_t r = 0; r < kDim; ++r) {
      int64_t acc = 0;
      for (uint32_t k = 0; k < kDim; ++k) acc += static_cast<int64_t>(forward[r * kDim + k]) * q[k];
      const int64_t mag = std::llabs(acc);
      uint32_t code = 0;
      for (int k = 0; k < 7; ++k) code += mag > static_cast<int64_t>(std::floor(boundary[k] * (128.f * nq))) ? 1u : 0u;
      code |= acc < 0 ? 8u : 0u;
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

  // A fragments of m16n8k32 (row-major A): register 0 row g, bytes k = 4c..4c+3; register 1
  // row g + 8; registers 2 and 3 the same at k + 16.
  static std::vector<uint32_t> a_fragments(const std::vector<int>& m) {
    std::vector<uint32_t> f(kFrags * 4);
    for (uint32_t mt = 0; mt < 8; ++mt)
      for (uint32_t t = 0; t < 4; ++t)
        for (uint32_t lane = 0; lane < 32; ++lane)
          for (uint32_t reg = 0; reg < 4; ++reg) {
            const uint32_t row = 16 * mt + lane / 4 + 8 * (reg % 2), k0 = 32 * t + 16 * (reg / 2) + 4 * (lane % 4);
            uint32_t word = 0;
            for (uint32_t i = 0; i < 4; ++i) word |= static_cast<uint32_t>(m[row * kDim + k0 + i] & 0xFF) << (8 * i);
            f[((mt * 4 + t) * 32 + lane) * 4 + reg] = word;
          }
    return f;
  }
};

}  // namespace mma_probe
