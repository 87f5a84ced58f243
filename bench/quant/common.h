// Helpers shared by the quantizer benches: random data, raw-block encoding, parameters.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "turboquant.h"
#include "turboquant_format.h"

namespace bench {

// xoshiro256** seeded through splitmix64; normal() by Box-Muller.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (int i = 0; i < 4; ++i) s[i] = tq_splitmix64(seed, i);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
  }
  double uniform() { return (next() >> 11) * 0x1.0p-53; }
  double normal() {
    double u = uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(1.0 - u)) * std::cos(6.283185307179586 * v);
  }
};

inline sw_tq_params params(uint32_t layers, uint32_t heads, uint32_t dim, uint32_t tokens, uint32_t dtype,
                           uint32_t kbits_x2, uint32_t vbits_x2, uint32_t variant, uint64_t seed, uint32_t version = 0) {
  sw_tq_params p{};
  p.layers = layers, p.kv_heads = heads, p.head_dim = dim, p.tokens = tokens, p.dtype = dtype;
  p.key_bits_x2 = kbits_x2, p.value_bits_x2 = vbits_x2, p.variant = variant, p.seed = seed, p.version = version;
  return p;
}

// Structured vectors that real KV caches hold and that a single randomized Hadamard round
// codes badly, beside Gaussian ones: `n` vectors of `dim` values, each its own draw. The
// last is a control without structure: one Gaussian draw, the same direction in every
// vector, as a constant vector is; under a random rotation any one direction is as good as
// another, so its spread over rotation seeds is what any single direction's is.
enum class Shape { Gaussian, OneHot, MassiveChannel, Constant, HadamardRow, BiasedOutliers, RepeatedGaussian };
constexpr Shape kShapes[] = {Shape::Gaussian, Shape::OneHot, Shape::MassiveChannel, Shape::Constant,
                             Shape::HadamardRow, Shape::BiasedOutliers, Shape::RepeatedGaussian};
constexpr size_t kShapeCount = sizeof(kShapes) / sizeof(kShapes[0]);

inline const char* shape_name(Shape s) {
  switch (s) {
    case Shape::Gaussian: return "Gaussian";
    case Shape::OneHot: return "one-hot";
    case Shape::MassiveChannel: return "one massive channel (sink token)";
    case Shape::Constant: return "constant";
    case Shape::HadamardRow: return "Hadamard row";
    case Shape::RepeatedGaussian: return "one Gaussian vector, repeated (control)";
    default: return "4 biased outlier channels";
  }
}

inline std::vector<float> shaped_vectors(Shape shape, size_t n, uint32_t dim, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(n * dim);
  // Drawn apart, so that the other shapes' draws stay what they were.
  Rng once(seed ^ 0x5DEECE66Dull);
  std::vector<double> repeated(dim);
  for (double& r : repeated) r = once.normal();
  for (size_t v = 0; v < n; ++v) {
    float* row = &x[v * dim];
    const uint32_t pick = static_cast<uint32_t>(rng.next() % dim);
    const double scale = 0.5 + rng.uniform();  // vectors differ in norm, as tokens do
    for (uint32_t c = 0; c < dim; ++c) {
      double value;
      switch (shape) {
        case Shape::Gaussian: value = rng.normal(); break;
        case Shape::OneHot: value = c == pick ? 1.0 : 0.0; break;
        // one channel (the same in every vector) 100x the rest: a massive activation
        case Shape::MassiveChannel: value = c == 7 ? 100.0 : rng.normal(); break;
        case Shape::Constant: value = 1.0; break;
        // row `pick` of the Sylvester Hadamard matrix: (-1)^popcount(pick & c)
        case Shape::HadamardRow: value = __builtin_popcount(pick & c) & 1 ? -1.0 : 1.0; break;
        case Shape::RepeatedGaussian: value = repeated[c]; break;
        // channels 3, 40, 77, 114 offset by 20 (KIVI's pre-RoPE key channels), the rest N(0, 1)
        default: value = c % 37 == 3 ? 20.0 + 2.0 * rng.normal() : rng.normal(); break;
      }
      row[c] = static_cast<float>(scale * value);
    }
  }
  return x;
}

inline size_t dtype_size(uint32_t dtype) { return dtype == SW_DTYPE_FP32 ? 4 : 2; }

// float <-> raw dtype bytes, rounding to nearest even like the quantizer
inline void encode(const std::vector<float>& x, uint32_t dtype, std::vector<uint8_t>& raw) {
  raw.resize(x.size() * dtype_size(dtype));
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == SW_DTYPE_FP32) {
      std::memcpy(&raw[4 * i], &x[i], 4);
    } else if (dtype == SW_DTYPE_FP16) {
      _Float16 h = static_cast<_Float16>(x[i]);
      std::memcpy(&raw[2 * i], &h, 2);
    } else {
      uint16_t h = tq_f32_to_bf16(x[i]);
      std::memcpy(&raw[2 * i], &h, 2);
    }
  }
}

inline void decode(const std::vector<uint8_t>& raw, uint32_t dtype, std::vector<float>& x) {
  x.resize(raw.size() / dtype_size(dtype));
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == SW_DTYPE_FP32) {
      std::memcpy(&x[i], &raw[4 * i], 4);
    } else if (dtype == SW_DTYPE_FP16) {
      _Float16 h;
      std::memcpy(&h, &raw[2 * i], 2);
      x[i] = static_cast<float>(h);
    } else {
      uint16_t h;
      std::memcpy(&h, &raw[2 * i], 2);
      x[i] = tq_bf16_to_f32(h);
    }
  }
}

// Whole-block host round trip on one thread.
inline std::vector<uint8_t> quantize(const sw_tq_params& p, const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> q(sw_tq_quantized_bytes(&p));
  sw_tq_write_header(&p, q.data());
  sw_tq_quantize_groups(&p, raw.data(), q.data(), 0, sw_tq_groups(&p));
  return q;
}

inline std::vector<uint8_t> dequantize(const sw_tq_params& p, const std::vector<uint8_t>& q) {
  std::vector<uint8_t> raw(sw_tq_raw_bytes(&p));
  sw_tq_dequantize_groups(&p, q.data(), raw.data(), 0, sw_tq_groups(&p));
  return raw;
}

}  // namespace bench
