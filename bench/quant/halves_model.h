// The C++ model of the fractional-rate probe (halves_probe.cu, docs/QUANTIZATION.md, "The
// fractional rates' halves on the tensor cores"): one group of 16 tokens of a head of 128 at
// b + 0.5 bits, its 64 outlier channels at b + 1 bits and the rest at b, each half through
// three randomized Hadamard rounds of dimension 64 taken as one integer matrix (entries up to
// a few hundred: int16, two int8 products a tile on the tensor cores) on 8-bit operands, and
// each code the floor of a polynomial, as format 3's 4-bit kind is coded. Per group:
//  1. energy of channel c: e = fma(x_t, x_t, e) over tokens t = 0..15 in turn (fp32, from 0);
//     its key is the top 16 bits of e's pattern; the outliers are the 64 largest keys, the
//     lower channel first among equal keys;
//  2. per token and half (channels ascending): top, f = 127 / top, q = x f rounded from the exact product,
//     acc = M q exactly (M = H D3 H D2 H D1 at dim 64, 512 times the orthogonal rotation),
//     nq = sqrt((float) sum q^2); code = floor(2^(bits-1) + a p(|a|)) held to 0..2^bits - 1,
//     a = acc held to +-cap (3 and 2 bits: where p stops rising, or has passed the top code);
//     stored norm nq / f;
//  3. record: mask (16 bytes, bit c of byte c / 8 set for an outlier), norms (token-major,
//     outlier half first), then per token the outlier half's codes (bits + 1 a coordinate) and
//     the other half's (bits), in offset binary, packed as the GPU writes them whole (put_code):
//     4-bit codes as nibbles (coordinate j at byte j / 2, the low nibble for even j); 3- and
//     2-bit codes' low two bits as 16 bytes of pairs (coordinate j at byte j / 4, bits
//     2 (j % 4)), then a 3-bit code's top bit as 8 bytes (byte j / 8, bit j % 8).
// Dequantize: c = round(centroid * 2^shift), the largest shift that keeps the codebook in int8;
// acc = M^T c exactly; value = (float) acc * (norm * 2^-(9 + shift)), rounded to bf16.
// The probe's inputs are finite (the format would need format 3's guards for NaN and infinity).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codebooks.h"
#include "rotation_sim.h"
#include "tq_matrix.h"
#include "turboquant_format.h"

namespace halves {

constexpr uint32_t kChannels = 128, kDim = 64, kTokens = 16, kGain = 512;  // kGain = kDim^(3/2)

// A half's coder: p(u) = u (c0 + u (c1 + ...)) of the codebook's degree, rising on [0, cap]
// across 1 .. 2^(bits-1) - 1 at the boundaries; in acc's units per vector (below).
struct Book {
  uint32_t bits;
  float poly[4];
  float cap;  // in unit-vector coordinates; 0: none needed (p rises over all of [0, 1])
};

// One vector's coefficients: poly[j] s^(j+1) with s = 1 / (kGain nq), and the cap in acc's units.
struct Coder {
  float c[4], cap;
};

// The polynomial's degree at each bit width (python3 bench/quant/polynomial_codes.py's fits).
TQ_MATRIX_HD constexpr uint32_t degree_for(uint32_t bits) { return bits == 4 ? 4 : bits == 3 ? 3 : 1; }

// The coder of a kBits book for one vector: its degree a constant, so that the GPU keeps the
// coefficients in registers rather than choosing each by a run-time index.
template <uint32_t kBits> TQ_MATRIX_HD inline Coder coder_for(const Book& book, float nq) {
  Coder k{};
  const float s = nq > 0.f ? 1.f / (static_cast<float>(kGain) * nq) : 0.f;
  float power = s;
  for (uint32_t j = 0; j < degree_for(kBits); ++j, power *= s) k.c[j] = book.poly[j] * power;
  k.cap = book.cap * static_cast<float>(kGain) * nq;
  return k;
}

// floor(offset + a p(|a|)) with a held to the cap, as an integer (not yet held to the code range:
// the packing clamps). Explicit fmaf: the GPU rounds alike.
template <uint32_t kDegree, bool kCapped> TQ_MATRIX_HD inline float code_value(const Coder& k, int acc, float offset) {
  float a = static_cast<float>(acc);
  if (kCapped) a = fminf(fmaxf(a, -k.cap), k.cap);
  const float m = fabsf(a);
  float p = k.c[kDegree - 1];
  for (int j = static_cast<int>(kDegree) - 2; j >= 0; --j) p = fmaf(m, p, k.c[j]);
  return fmaf(a, p, offset);
}

// tq_matrix::fit_crossings's polynomial through the codebook's positive boundaries, then the
// cap: the first u where p stops rising or reaches the top code's next integer. Aborts where
// the fit does not code the boundaries' neighbourhoods as they do.
inline Book fit_book(uint32_t bits) {
  Book book{};
  book.bits = bits;
  const uint32_t n = (1u << (bits - 1)) - 1;
  const float* positive = TQ_CODEBOOK_BOUNDARIES[tq_log2(kDim) - 3][bits - 1] + n + 1;  // ascending
  if (!tq_matrix::fit_crossings(positive, static_cast<int>(n), static_cast<int>(degree_for(bits)), book.poly)) std::abort();
  if (bits == 4) return book;  // the quartic rises over [0, 1]; cvt.pack.sat clamps its top
  double last = 0;
  for (int i = 1; i <= 100000 && book.cap == 0.f; ++i) {
    const double u = i / 100000.0;
    double v = 0;
    for (int j = static_cast<int>(degree_for(bits)) - 1; j >= 0; --j) v = v * u + book.poly[j];
    v *= u;
    if (v <= last || v >= n + 1) book.cap = static_cast<float>((i - 1) / 100000.0);
    last = v;
  }
  return book;
}

// A half's centroids as dequantize's 8-bit operands: centroid * 2^shift rounded, the largest
// shift that keeps every one within int8, in code order (the codebook's, ascending).
struct Centroids {
  int value[16];
  int shift;
};

struct Plan {
  int16_t matrix[kDim][kDim];  // M[j][k], |M| <= 512
  Book outlier, rest;          // bits + 1 and bits
  Centroids centroids[2];      // the outlier half's, the rest's
  uint32_t bits;               // the rest's; the rate is bits + 0.5
};

inline Centroids centroids_for(uint32_t bits) {
  const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(kDim) - 3][bits - 1];
  Centroids c{};
  c.shift = 0;
  while (std::lround(std::ldexp(std::fabs(double(cent[0])), c.shift + 1)) <= 127) ++c.shift;
  for (uint32_t k = 0; k < (1u << bits); ++k) c.value[k] = static_cast<int>(std::lround(std::ldexp(double(cent[k]), c.shift)));
  return c;
}

inline Plan make_plan(uint64_t seed, uint32_t bits) {
  Plan plan{};
  plan.bits = bits;
  plan.outlier = fit_book(bits + 1), plan.rest = fit_book(bits);
  plan.centroids[0] = centroids_for(bits + 1), plan.centroids[1] = centroids_for(bits);
  // format 2's three rounds at dim 64 (sub-vector 0's signs), scaled to integers
  const bench::Matrix m = bench::hadamard_rotation(kDim, 0, seed, 3);
  for (uint32_t j = 0; j < kDim; ++j)
    for (uint32_t k = 0; k < kDim; ++k) plan.matrix[j][k] = static_cast<int16_t>(std::lround(m[j * kDim + k] * kGain));
  return plan;
}

constexpr uint32_t kMaskBytes = kChannels / 8, kNormBytes = kTokens * 2 * 4;
TQ_MATRIX_HD constexpr uint32_t record_bytes(uint32_t bits) { return kMaskBytes + kNormBytes + kTokens * 8 * (2 * bits + 1); }

// The energy key of each channel, in the order both sides compute it.
inline void channel_keys(const uint16_t* x, uint32_t (&key)[kChannels]) {
  for (uint32_t c = 0; c < kChannels; ++c) {
    float e = 0.f;
    for (uint32_t t = 0; t < kTokens; ++t) {
      const float v = tq_bf16_to_f32(x[t * kChannels + c]);
      e = fmaf(v, v, e);
    }
    uint32_t bits;
    std::memcpy(&bits, &e, 4);
    key[c] = bits >> 16;
  }
}

// x f rounded to the nearest integer (ties to even) from the exact product, as an integer with that
// low byte (|x f| <= 127): on the GPU one fma with 1.5 * 2^23, whose float holds the rounded product
// in its low bits; on the host the product is exact in double (x is a bf16 value, 8 significant
// bits). Format 3 rounds the float product instead (tq_matrix::round_to_low_byte), one instruction more.
TQ_MATRIX_HD inline int fixed_point_byte(float x, float f) {
#ifdef __CUDA_ARCH__
  return __float_as_int(__fmaf_rn(x, f, 12582912.f));
#else
  return static_cast<int>(std::nearbyint(static_cast<double>(x) * f));
#endif
}

// The code as any integer that clamps to it (the GPU's packing clamps to 0..15; the caps keep
// 3 and 2 bits inside their ranges, so that a floor above the top code is never asked for).
template <uint32_t kBits> TQ_MATRIX_HD inline int unclamped_code(const Coder& k, int acc) {
  return tq_matrix::floor_for_clamp(code_value<degree_for(kBits), kBits != 4>(k, acc, static_cast<float>(1u << (kBits - 1))));
}

inline uint32_t code_at(const Book& book, const Coder& k, int acc) {
  const int v = book.bits == 4 ? unclamped_code<4>(k, acc) : book.bits == 3 ? unclamped_code<3>(k, acc) : unclamped_code<2>(k, acc);
  const int top = (1 << book.bits) - 1;
  return static_cast<uint32_t>(v < 0 ? 0 : v > top ? top : v);
}

// A half's codes in its record (bits x 8 bytes a token), as the header says: put_code sets the
// code of coordinate j in zeroed bytes, get_code reads it.
inline void put_code(uint8_t* half, uint32_t bits, uint32_t j, uint32_t code) {
  if (bits == 4) {
    half[j / 2] |= static_cast<uint8_t>(code << (4 * (j % 2)));
    return;
  }
  half[j / 4] |= static_cast<uint8_t>((code & 3u) << (2 * (j % 4)));
  if (bits == 3) half[16 + j / 8] |= static_cast<uint8_t>((code >> 2) << (j % 8));
}
inline uint32_t get_code(const uint8_t* half, uint32_t bits, uint32_t j) {
  if (bits == 4) return (half[j / 2] >> (4 * (j % 2))) & 0xFu;
  uint32_t code = (half[j / 4] >> (2 * (j % 4))) & 3u;
  if (bits == 3) code |= ((half[16 + j / 8] >> (j % 8)) & 1u) << 2;
  return code;
}

// One group of 16 tokens x 128 bf16 values into its record.
inline void quantize_group(const Plan& plan, const uint16_t* x, uint8_t* record) {
  uint32_t key[kChannels];
  channel_keys(x, key);
  uint32_t order[kChannels];
  for (uint32_t c = 0; c < kChannels; ++c) order[c] = c;
  std::stable_sort(order, order + kChannels, [&](uint32_t a, uint32_t b) { return key[a] > key[b]; });
  bool outlier[kChannels] = {};
  for (uint32_t i = 0; i < kChannels / 2; ++i) outlier[order[i]] = true;
  std::memset(record, 0, record_bytes(plan.bits));
  uint32_t idx[2][kDim], n[2] = {};
  for (uint32_t c = 0; c < kChannels; ++c) {
    if (outlier[c]) record[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
    idx[outlier[c] ? 0 : 1][n[outlier[c] ? 0 : 1]++] = c;
  }
  float* norms = reinterpret_cast<float*>(record + kMaskBytes);
  uint8_t* codes = record + kMaskBytes + kNormBytes;
  for (uint32_t t = 0; t < kTokens; ++t)
    for (uint32_t s = 0; s < 2; ++s) {
      const Book& book = s == 0 ? plan.outlier : plan.rest;
      float v[kDim], top = 0.f;
      for (uint32_t j = 0; j < kDim; ++j) top = fmaxf(top, fabsf(v[j] = tq_bf16_to_f32(x[t * kChannels + idx[s][j]])));
      const float f = tq_matrix::input_factor(top);
      int q[kDim], sum2 = 0;
      for (uint32_t j = 0; j < kDim; ++j) sum2 += (q[j] = fixed_point_byte(v[j], f)) * q[j];
      const float nq = sqrtf(static_cast<float>(sum2));
      norms[t * 2 + s] = f == 0.f ? 0.f : nq / f;
      const Coder k = book.bits == 4 ? coder_for<4>(book, nq) : book.bits == 3 ? coder_for<3>(book, nq) : coder_for<2>(book, nq);
      uint8_t* half = codes + t * 8 * (2 * plan.bits + 1) + (s == 0 ? 0 : 8 * (plan.bits + 1));
      for (uint32_t j = 0; j < kDim; ++j) {
        int acc = 0;
        for (uint32_t i = 0; i < kDim; ++i) acc += plan.matrix[j][i] * q[i];
        put_code(half, book.bits, j, code_at(book, k, acc));
      }
    }
}

// A half's vector's scale: its values are acc * norm * 2^-(9 + shift) (M is 512 times the
// rotation), in fp32, both sides alike.
TQ_MATRIX_HD inline float half_scale(float norm, int shift) { return ldexpf(norm, -9 - shift); }

// A record back to its group (16 x 128 bf16): each half's centroids as 8-bit integers through
// M^T exactly, scaled by the norm, rounded to bf16 (to nearest even).
inline void dequantize_group(const Plan& plan, const uint8_t* record, uint16_t* x) {
  const float* norms = reinterpret_cast<const float*>(record + kMaskBytes);
  const uint8_t* codes = record + kMaskBytes + kNormBytes;
  uint32_t idx[2][kDim], n[2] = {};
  for (uint32_t c = 0; c < kChannels; ++c) {
    const uint32_t s = (record[c / 8] >> (c % 8)) & 1u ? 0 : 1;
    idx[s][n[s]++] = c;
  }
  for (uint32_t t = 0; t < kTokens; ++t)
    for (uint32_t s = 0; s < 2; ++s) {
      const Book& book = s == 0 ? plan.outlier : plan.rest;
      const Centroids& cent = plan.centroids[s];
      const uint8_t* half = codes + t * 8 * (2 * plan.bits + 1) + (s == 0 ? 0 : 8 * (plan.bits + 1));
      int y[kDim];
      for (uint32_t j = 0; j < kDim; ++j) y[j] = cent.value[get_code(half, book.bits, j)];
      for (uint32_t i = 0; i < kDim; ++i) {
        int acc = 0;
        for (uint32_t j = 0; j < kDim; ++j) acc += plan.matrix[j][i] * y[j];
        x[t * kChannels + idx[s][i]] = tq_f32_to_bf16(static_cast<float>(acc) * half_scale(norms[t * 2 + s], cent.shift));
      }
    }
}

}  // namespace halves
